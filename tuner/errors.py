"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""


class UserInputError(Exception):
    """Bad input: a malformed model, an unknown target, a bad option."""


class ModelValidationError(UserInputError):
    """The model file is not a valid, self-contained ONNX model."""


class UnsupportedOperatorError(UserInputError):
    """The ONNX importer has no conversion for an operator of the model."""


class TargetError(UserInputError):
    """The target cannot be parsed or is not supported."""
