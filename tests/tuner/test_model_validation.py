from __future__ import annotations

from pathlib import Path

import pytest

from tests.tuner import bad_models
from tunefarm.tuner.errors import ModelValidationError, UnsupportedOperatorError
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx


def test_valid_model_signature(tiny_cnn_path: Path) -> None:
    validated = validate_onnx_model(tiny_cnn_path)
    assert validated.opset == 17
    assert [s.as_dict() for s in validated.inputs] == [
        {"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}
    ]
    assert [s.as_dict() for s in validated.outputs] == [
        {"name": "logits", "shape": [1, 10], "dtype": "float32"}
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (bad_models.not_onnx, "not an ONNX model"),
        (bad_models.truncated, "not an ONNX model, or a truncated one"),
        (bad_models.external_data_outside, "outside the model's folder"),
        (bad_models.dynamic_batch, "dynamic dimension 'batch'"),
    ],
)
def test_bad_models_are_rejected_with_a_reason(make, message: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelValidationError, match=message):
        validate_onnx_model(make(tmp_path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelValidationError, match="no such file"):
        validate_onnx_model(tmp_path / "nope.onnx")


def test_unsupported_operator_is_named_with_its_node(tmp_path: Path) -> None:
    validated = validate_onnx_model(bad_models.unsupported_operator(tmp_path))
    with pytest.raises(
        UnsupportedOperatorError, match=r"com\.example\.Einsum2000 .*'mystery_node'"
    ):
        import_onnx(validated)


def test_unsupported_standard_operator_is_named(tmp_path: Path) -> None:
    path = bad_models.unsupported_standard_operator(tmp_path)
    with pytest.raises(UnsupportedOperatorError, match="operator Celu \\(node 'the_node'\\)"):
        import_onnx(validate_onnx_model(path))
