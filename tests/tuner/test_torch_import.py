"""PyTorch programs (``torch.export.save``, ``.pt2``) compile like ONNX models (issue 18)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.torch_import import import_exported_program, validate_exported_program

TUNEFARM = [sys.executable, "-m", "tunefarm"]


class SmallNet(torch.nn.Module):
    """Weights and buffers (batch norm's running stats) that must be bound, not left as inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.norm(self.conv(image)))
        return self.head(features.mean(dim=(2, 3)))


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = SmallNet().eval()
    module.norm.running_mean.uniform_(-0.5, 0.5)  # not the identity the defaults would give
    module.norm.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "small.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(1, 3, 16, 16),)), str(path))
    return path, module


def test_a_program_imports_with_its_weights_bound(tmp_path: Path) -> None:
    path, module = _saved(tmp_path)
    validated = validate_exported_program(path)
    assert [(s.name, s.shape, s.dtype) for s in validated.inputs] == [
        ("image", [1, 3, 16, 16], "float32")
    ]
    assert [(s.shape, s.dtype) for s in validated.outputs] == [([1, 5], "float32")]
    mod = import_exported_program(validated)
    assert len(mod["main"].params) == 1  # the image only: every weight is a constant
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    image = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(image)).numpy(), expected, atol=1e-4)


def test_the_cli_compiles_a_pt2_file(tmp_path: Path) -> None:
    path, module = _saved(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            *TUNEFARM,
            "compile",
            str(path),
            "--trials",
            "0",
            "--no-baseline",
            "--out",
            str(out),
            "--db",
            f"sqlite:///{tmp_path / 'tuning.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["format"] == "torch.export"
    assert "PyTorch program" in manifest["check_vs_onnxruntime"]["not_checked"]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "model.so")), tvm.cpu())
    image = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(image)).numpy(), expected, atol=1e-4)


def test_a_file_that_is_no_program_is_exit_2_with_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt2"
    bogus.write_bytes(b"PK\x03\x04 not really a zip archive")
    result = subprocess.run(
        [
            *TUNEFARM,
            "compile",
            str(bogus),
            "--trials",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--db",
            f"sqlite:///{tmp_path / 'tuning.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "not a torch.export program" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tuning.db").exists()  # nothing written for bad input


def test_a_program_with_a_dynamic_dimension_is_refused(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=2, max=8)
    program = torch.export.export(
        SmallNet().eval(), (torch.randn(2, 3, 16, 16),), dynamic_shapes={"image": {0: batch}}
    )
    path = tmp_path / "dynamic.pt2"
    torch.export.save(program, str(path))
    with pytest.raises(ModelValidationError, match="dynamic dimension"):
        validate_exported_program(path)


def test_for_the_farm_a_program_becomes_an_onnx_model_that_matches_torch(tmp_path: Path) -> None:
    import onnxruntime

    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.torch_import import exported_program_as_onnx

    path, module = _saved(tmp_path)
    onnx_path = exported_program_as_onnx(validate_exported_program(path), tmp_path / "small.onnx")
    validated = validate_onnx_model(onnx_path)
    assert [(s.name, s.shape) for s in validated.inputs] == [("image", [1, 3, 16, 16])]
    image = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype("float32")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"image": image})
    with torch.no_grad():
        expected = module(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_a_relu6_program_converts_to_fp16_and_matches_torch(tmp_path: Path) -> None:
    """TVM's PyTorch importer gives ReLU6 scalar bounds that fp16's pass cannot take
    (MobileNetV2 failed with --fp16 on the H100); they come in as min/max with constants."""
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU6()
    ).eval()
    image = torch.randn(1, 3, 16, 16) * 4
    path = tmp_path / "relu6.pt2"
    torch.export.save(torch.export.export(module, (image,)), str(path))
    mod = import_exported_program(validate_exported_program(path))
    assert "relax.clip" not in mod.script()
    target = parse_target("llvm")
    result = run_pipeline(mod, target=target, options=PipelineOptions(layout="auto", fp16=True))
    vm = relax.VirtualMachine(tvm.compile(result.mod, target=target), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(image.numpy()))
    ours = (out[0] if not hasattr(out, "numpy") else out).numpy().astype("float32")
    with torch.no_grad():
        expected = module(image).numpy()
    assert float(expected.max()) == 6.0 and float(expected.min()) == 0.0  # both bounds bite
    scale = float(np.abs(expected).max())
    assert float(np.abs(ours - expected).max()) / scale <= 1e-2


def test_batch_norm_folds_into_the_convolution_as_onnx_exports_it(tmp_path: Path) -> None:
    """``torch.export`` keeps batch norm; decomposed, it left four elementwise ops after every
    convolution, which no vendor call takes (``tuner/fold_scale_shift.py``)."""
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target

    path, module = _saved(tmp_path)
    mod = import_exported_program(validate_exported_program(path))
    target = parse_target("llvm")
    result = run_pipeline(mod, target=target, options=PipelineOptions(layout="auto"))
    ops = {op for kernel in result.fused for op in kernel.ops}
    assert "conv2d" in ops and not {"subtract", "divide"} & ops
    vm = relax.VirtualMachine(tvm.compile(result.mod, target=target), tvm.cpu())
    image = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(image)).numpy(), expected, atol=1e-4)
