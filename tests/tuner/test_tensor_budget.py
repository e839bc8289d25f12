"""Issue 21: a tiny model whose import would build a huge tensor is refused before import."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.tuner import bad_models
from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.model_validation import validate_onnx_model


@pytest.mark.parametrize("how", ["ConstantOfShape", "Expand", "Tile"])
def test_a_bomb_is_refused_by_name_before_anything_is_built(how: str, tmp_path: Path) -> None:
    path = bad_models.allocation_bomb(tmp_path, how=how)
    assert path.stat().st_size < 1024
    started = time.perf_counter()
    with pytest.raises(ModelValidationError) as caught:
        validate_onnx_model(path)
    assert time.perf_counter() - started < 5  # inferred, not built
    message = str(caught.value)
    assert f"node 'bomb' ({how}) would build a tensor of 4.0 GiB" in message
    assert "TUNEFARM_MAX_TENSOR_BYTES" in message


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bad_models.allocation_bomb(tmp_path, elements=1024)  # 4 KiB
    assert validate_onnx_model(path).inputs[0].name == "x"
    monkeypatch.setenv("TUNEFARM_MAX_TENSOR_BYTES", "1000")
    with pytest.raises(ModelValidationError, match=r"4\.0 KiB, over the limit of 1000 bytes"):
        validate_onnx_model(path)


def test_a_real_model_passes(tiny_cnn_path: Path) -> None:
    assert validate_onnx_model(tiny_cnn_path, max_tensor_bytes=1024**2).inputs
