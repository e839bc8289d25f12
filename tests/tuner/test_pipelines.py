from __future__ import annotations

from pathlib import Path

import pytest

from tuner.model_validation import validate_onnx_model
from tuner.onnx_import import import_onnx
from tuner.pipelines import PipelineOptions, run_pipeline
from tuner.targets import parse_target
from tuner.tasks import extract_tuning_tasks


@pytest.fixture(scope="module")
def relax_mod(tiny_cnn_path: Path):  # type: ignore[no-untyped-def]
    return import_onnx(validate_onnx_model(tiny_cnn_path))


def test_default_pipeline_fuses_conv_bias_relu(relax_mod) -> None:  # type: ignore[no-untyped-def]
    target = parse_target("llvm")
    result = run_pipeline(relax_mod, target=target, options=PipelineOptions())
    assert result.layout == "NCHW"
    assert result.phases == ["inference-cleanup", "legalize", "fuse", "cleanup"]
    fused = {kernel.name: kernel.ops for kernel in result.fused}
    assert fused["fused_conv2d_add_relu"] == ["conv2d", "add", "relu"]
    tasks = extract_tuning_tasks(result.mod, target=target)
    assert tasks[0].name == "fused_conv2d_add_relu"  # heaviest first
    assert tasks[0].flops > 0


def test_nhwc_layout_converts_convolutions(relax_mod) -> None:  # type: ignore[no-untyped-def]
    target = parse_target("llvm")
    result = run_pipeline(relax_mod, target=target, options=PipelineOptions(layout="NHWC"))
    assert result.layout == "NHWC"
    assert "layout-and-precision" in result.phases
    conv = next(t for t in extract_tuning_tasks(result.mod, target=target) if "conv2d" in t.name)
    assert 'T.sblock("conv2d_nhwc")' in conv.mod.script()


def test_unknown_pipeline(relax_mod) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="unknown pipeline"):
        run_pipeline(relax_mod, target=parse_target("llvm"), options=PipelineOptions(), name="x")
