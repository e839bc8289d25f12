"""tunefarm compile on a small CNN: real tuning, a real .so, checked against ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tvm
from tvm import relax

TUNEFARM = [sys.executable, "-m", "tunefarm"]
TRIALS = 16


def _compile(model: Path, out: Path, db_url: str, trials: int = TRIALS) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [
            *TUNEFARM,
            "compile",
            str(model),
            "--target",
            "llvm",
            "--trials",
            str(trials),
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
    assert f"report:   {out / 'report.html'}" in result.stdout
    # stdout is a pipe here: no progress bar, no stage lines, just the six-line summary.
    assert len(result.stdout.strip().splitlines()) == 6, result.stdout
    assert "vs ONNX Runtime" in result.stdout  # the output check, then the peer timing
    assert "vs onnxruntime" in result.stdout
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_compile_tunes_builds_and_then_reuses(
    tiny_cnn_path: Path, tmp_path: Path, db_url: str
) -> None:
    cold = _compile(tiny_cnn_path, tmp_path / "cold", db_url)
    # report.html: a curve of the whole model and one per task, from the trials just filed.
    report = (tmp_path / "cold" / "report.html").read_text()
    assert report.count("<polyline") >= 2
    assert all(task["name"] in report for task in cold["tasks"])

    # The tuning really ran and every record went to the database.
    # Budget a reshape (one schedule) leaves unused goes to the other tasks.
    assert cold["tuning"]["trials_run"] == TRIALS
    assert cold["coverage_before_tuning"]["tasks_percent"] == 0
    names = {task["name"] for task in cold["tasks"]}
    assert any("conv2d" in name for name in names)
    # Each task is built with its fastest measured record: a tuned one, or a default schedule
    # where the 16 trials found nothing faster.
    assert {task["source"] for task in cold["tasks"]} <= {"tuned now", "default schedule"}
    assert sum(task["trials"] for task in cold["tasks"]) == TRIALS
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
    for latency in (cold["latency"]["untuned"], cold["latency"]["tuned"]):
        assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
        assert 5 <= latency["samples"] <= 50
    assert cold["latency"]["baseline"]["source"] == "measured now"
    # ONNX Runtime on the same machine, the same inputs, the same timer.
    peer = cold["vs_onnxruntime"]
    assert peer["provider"] == "CPUExecutionProvider"
    assert 0 < peer["latency"]["p50_ms"] <= peer["latency"]["p99_ms"]
    assert peer["ratio_p99"] == pytest.approx(
        cold["latency"]["tuned"]["p99_ms"] / peer["latency"]["p99_ms"], rel=0.002, abs=0.001
    )
    assert cold["reports_not_run"] == []
    _check_in_model_breakdown(cold)
    assert cold["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert cold["target"]["json"]["kind"] == "llvm"
    assert cold["target"]["fingerprint_details"]["tvm_version"] == tvm.__version__

    # Compiling again with --trials 0 against the same database: everything is reused.
    warm = _compile(tiny_cnn_path, tmp_path / "warm", db_url, trials=0)
    assert warm["tuning"]["trials_run"] == 0
    assert warm["coverage_before_tuning"]["tasks_percent"] == 100
    assert warm["coverage_before_tuning"]["flops_percent"] == 100
    assert {task["source"] for task in warm["tasks"]} == {"reused"}
    # The untuned baseline of the same model, target and pipeline is read, not measured again.
    assert warm["latency"]["baseline"]["source"] == "cached"
    assert warm["latency"]["untuned"] == cold["latency"]["untuned"]
    assert warm["timings"]["total_sec"] < cold["timings"]["total_sec"]


def _check_in_model_breakdown(manifest: dict) -> None:  # type: ignore[type-arg]
    """Issue 16: each task's kernel, timed in place in the model, beside its record."""
    section = manifest["in_model"]
    assert "not_run" not in section, section
    assert section["runs"] >= 1 and section["launch_floor_us"] > 0
    kernels = {kernel["name"]: kernel for kernel in section["kernels"]}
    tasks = {task["name"]: task for task in manifest["tasks"]}
    assert set(tasks) <= set(kernels)  # every tuned task ran as a kernel of its own name
    assert sum(kernel["share"] for kernel in kernels.values()) == pytest.approx(1.0, abs=0.01)
    assert section["kernels_us_per_run"] == pytest.approx(
        sum(kernel["us_per_call"] * kernel["calls"] for kernel in kernels.values()), rel=0.01
    )
    for name, task in tasks.items():
        kernel = kernels[name]
        assert task["in_model_us"] == kernel["us_per_call"]
        assert kernel["recorded_us"] == task["best_latency_us"]
        if kernel["recorded_us"]:
            assert kernel["in_model_over_recorded"] == pytest.approx(
                kernel["us_per_call"] / kernel["recorded_us"], rel=0.01, abs=0.002
            )
    # Every kernel ran; the convs did real work (a loaded machine may slow any one kernel, so
    # no ranking is asserted).
    assert all(kernel["us_per_call"] >= 0 and kernel["calls"] >= 1 for kernel in kernels.values())
    assert sum(k["us_per_call"] for name, k in kernels.items() if "conv2d" in name) > 0
