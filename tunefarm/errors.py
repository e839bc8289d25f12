"""The one exception the Python API raises for anything the caller must fix."""

from tunefarm.tuner.errors import UserInputError


class TunefarmError(UserInputError):
    """Bad input or a failed compile, said in one line (never TVM's internals)."""
