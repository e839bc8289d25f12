"""tunefarm compile on a small CNN: real tuning, a real .so, checked against ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import tvm
from tvm import relax

TUNEFARM = [sys.executable, "-m", "workers.cli"]
TRIALS = 16


def _compile(model: Path, out: Path, db_url: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [
            *TUNEFARM,
            "compile",
            str(model),
            "--target",
            "llvm",
            "--trials",
            str(TRIALS),
            "--out",
            str(out),
            "--db",
            db_url,
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert f"library:  {out / 'model.so'}" in result.stdout
    assert f"manifest: {out / 'manifest.json'}" in result.stdout
    # stdout is a pipe here: no progress bar, no stage lines, just the four-line summary.
    assert len(result.stdout.strip().splitlines()) == 4, result.stdout
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_compile_tunes_builds_and_then_reuses(
    tiny_cnn_path: Path, tmp_path: Path, db_url: str
) -> None:
    cold = _compile(tiny_cnn_path, tmp_path / "cold", db_url)

    # The tuning really ran and every record went to the database.
    # Budget a reshape (one schedule) leaves unused goes to the other tasks.
    assert cold["tuning"]["trials_run"] == TRIALS
    assert cold["coverage_before_tuning"]["tasks_percent"] == 0
    names = {task["name"] for task in cold["tasks"]}
    assert any("conv2d" in name for name in names)
    assert any(task["source"] == "tuned now" for task in cold["tasks"])
    fused = {kernel["name"]: kernel["ops"] for kernel in cold["pipeline"]["fused"]}
    assert any("conv2d" in ops and "relu" in ops for ops in fused.values())

    # The library loads in plain TVM and agrees with ONNX Runtime.
    library = tmp_path / "cold" / "model.so"
    import hashlib

    assert hashlib.sha256(library.read_bytes()).hexdigest() == cold["library"]["sha256"]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    image = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype("float32")
    ours = vm["main"](tvm.runtime.tensor(image)).numpy()
    session = onnxruntime.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"image": image})
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    assert cold["check_vs_onnxruntime"]["max_abs_diff"] < 1e-3
    for kind in ("untuned", "tuned"):
        latency = cold["latency"][kind]
        assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    assert cold["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert cold["target"]["json"]["kind"] == "llvm"
    assert cold["target"]["fingerprint_details"]["tvm_version"] == tvm.__version__

    # Compiling again against the same database: everything is reused, nothing is tuned.
    warm = _compile(tiny_cnn_path, tmp_path / "warm", db_url)
    assert warm["tuning"]["trials_run"] == 0
    assert warm["coverage_before_tuning"]["tasks_percent"] == 100
    assert warm["coverage_before_tuning"]["flops_percent"] == 100
    assert {task["source"] for task in warm["tasks"]} == {"reused"}
    assert warm["timings"]["total_sec"] < cold["timings"]["total_sec"]
