"""After the build: time-boxed latency, a cached baseline, ONNX Runtime as a report, never a gate.

Issue 15, items 5 to 7. Models at every opset from 6 to the newest compile with ``--trials 0``
into a library that runs and computes what ONNX Runtime computes. Where ONNX Runtime cannot
load a model (it has no kernel for BatchNormalization-6, Gemm-6, AveragePool-1, PRelu-6,
Add-6), the manifest says so and the compile succeeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import tvm
from tvm import relax

from tests.tuner.opset_models import (
    INPUT_SHAPE,
    NEWEST_OPSET,
    OLDEST_OPSET,
    onnxruntime_refusal,
    small_cnn,
    write_small_cnn,
)
from tunefarm.tuner import build, library_report
from tunefarm.tuner.compile_job import CompileOptions, compile_model
from tunefarm.tuner.job_spec import JobOptions, JobSpec
from tunefarm.tuner.latency import LatencyReport, TimeBox, time_calls
from tunefarm.tuner.library_report import (
    Baseline,
    LatencySection,
    LibraryReport,
    OutputCheck,
    PeerTiming,
    peer_provider,
)

TUNEFARM = [sys.executable, "-m", "tunefarm"]
OPSETS = list(range(OLDEST_OPSET, NEWEST_OPSET + 1))
QUICK = {"latency_samples": 5, "latency_budget_sec": 0.05}
"""A short time box: these tests check what is reported, not how fast the model is."""


def _compile(model: Path, out: Path, db_url: str, **options: Any) -> dict[str, Any]:
    choices = {key: options.pop(key) for key in list(options) if key in JobOptions.model_fields}
    result = compile_model(
        CompileOptions(
            model_path=model,
            spec=JobSpec.of("llvm", 0, **choices),
            out_dir=out,
            database_url=db_url,
            **{**QUICK, **options},
        )
    )
    assert result.library_path.is_file()
    return result.manifest


def _run_library(path: Path, image: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(image)).numpy()  # type: ignore[no-any-return]


def _onnxruntime(model_bytes: bytes, image: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": image})[0])


# -- models at every opset ---------------------------------------------------------------


def test_onnxruntime_refuses_some_opset_in_the_range() -> None:
    # Otherwise the opset test below would never see a skipped check.
    refused = {opset: onnxruntime_refusal(small_cnn(opset)) for opset in OPSETS}
    assert refused[OLDEST_OPSET] is not None
    assert "NOT_IMPLEMENTED" in refused[OLDEST_OPSET]
    assert refused[NEWEST_OPSET] is None, refused[NEWEST_OPSET]


@pytest.fixture(scope="module")
def opset_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('opsets') / 'tuning.db'}"


@pytest.mark.parametrize("opset", OPSETS)
def test_a_model_at_any_opset_compiles_and_the_manifest_explains_a_skipped_check(
    opset: int, opset_database: str, tmp_path: Path
) -> None:
    model = write_small_cnn(tmp_path, opset)
    manifest = _compile(model, tmp_path / "out", opset_database, baseline=False)

    # The library runs and computes what ONNX Runtime computes: on this file, or where ONNX
    # Runtime cannot load it, on the same network written at opset 7.
    image = np.random.default_rng(opset).standard_normal(INPUT_SHAPE).astype(np.float32)
    refusal = onnxruntime_refusal(small_cnn(opset))
    reference_opset = opset if refusal is None else 7
    expected = _onnxruntime(small_cnn(reference_opset).SerializeToString(), image)
    np.testing.assert_allclose(
        _run_library(tmp_path / "out" / "model.so", image), expected, rtol=1e-5, atol=1e-6
    )

    assert manifest["model"]["opset"] == opset
    assert manifest["latency"]["tuned"]["p50_ms"] > 0
    not_run = {entry["report"]: entry["reason"] for entry in manifest["reports_not_run"]}
    assert not_run["baseline"] == "--no-baseline"
    check, peer = manifest["check_vs_onnxruntime"], manifest["vs_onnxruntime"]
    if refusal is None:
        assert set(not_run) == {"baseline"}
        assert check["not_checked"] is None
        assert check["max_abs_diff"] < 1e-4
        assert peer["provider"] == "CPUExecutionProvider"
        assert peer["latency"]["p50_ms"] > 0
        assert peer["ratio_p50"] == pytest.approx(
            manifest["latency"]["tuned"]["p50_ms"] / peer["latency"]["p50_ms"], rel=0.002, abs=0.001
        )
    else:
        # One line that names the step and ONNX Runtime's own reason.
        first_line = refusal.splitlines()[0]
        assert set(not_run) == {"baseline", "check_vs_onnxruntime", "vs_onnxruntime"}
        for reason in (check["not_checked"], peer["not_measured"], not_run["vs_onnxruntime"]):
            assert "\n" not in reason
            assert reason.startswith("ONNX Runtime")
            assert first_line in reason
        assert check["max_abs_diff"] is None
        assert peer["latency"] is None
        assert peer["ratio_p50"] is None


def test_the_cli_compiles_an_opset_6_model_and_says_why_it_was_not_checked(
    tmp_path: Path,
) -> None:
    model = write_small_cnn(tmp_path, 6)
    result = subprocess.run(
        [
            *TUNEFARM,
            "compile",
            str(model),
            "--trials",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--db",
            f"sqlite:///{tmp_path / 'tuning.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    lines = result.stdout.strip().splitlines()
    # library, manifest, report, trials, latency, peer
    assert len(lines) == 6, result.stdout
    assert lines[4].startswith("latency p50: untuned ")
    assert "(measured now)" in lines[4]
    assert "outputs not checked (ONNX Runtime" in lines[4]
    assert "BatchNormalization(6)" in lines[4]
    assert lines[5].startswith(f"vs onnxruntime {onnxruntime.__version__}: not measured (")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {entry["report"] for entry in manifest["reports_not_run"]} == {
        "check_vs_onnxruntime",
        "vs_onnxruntime",
    }


def test_a_failing_untuned_build_is_reported_and_the_compile_succeeds(
    tiny_cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Traceback (most recent call last):\n  ...\nInternalError: no luck")

    monkeypatch.setattr(build, "compile_untuned", broken)
    manifest = _compile(tiny_cnn_path, tmp_path / "out", f"sqlite:///{tmp_path / 'db.sqlite'}")
    baseline = manifest["latency"]["baseline"]
    assert baseline["source"] == "not measured"
    assert baseline["reason"] == "the untuned build failed: InternalError: no luck"
    assert manifest["latency"]["untuned"] is None
    assert manifest["speedup_p50"] is None
    assert manifest["reports_not_run"] == [{"report": "baseline", "reason": baseline["reason"]}]
    # The rest of the report is there.
    assert manifest["check_vs_onnxruntime"]["max_abs_diff"] < 1e-4
    assert manifest["check_vs_onnxruntime"]["inconclusive"] is None
    assert manifest["vs_onnxruntime"]["latency"]["p50_ms"] > 0


def _ignores_its_input(path: Path, *, constant: bool) -> Path:
    """y = relu(x) * 0 + b: the same output whatever x; constant too when b is."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bias = np.full((1, 8), 0.5, "float32") if constant else np.arange(8, dtype="float32")[None]
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mul", ["r", "zero"], ["z"]),
            helper.make_node("Add", ["z", "bias"], ["y"]),
        ],
        "ignores_its_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(np.zeros((1, 8), "float32"), "zero"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("constant", "why"),
    [
        (True, "ONNX Runtime's output is constant"),
        (False, "ONNX Runtime's output does not change with the input"),
    ],
)
def test_an_output_check_that_proves_nothing_says_it_is_inconclusive(
    tmp_path: Path, constant: bool, why: str
) -> None:
    model = _ignores_its_input(tmp_path / "model.onnx", constant=constant)
    manifest = _compile(model, tmp_path / "out", f"sqlite:///{tmp_path / 'db.sqlite'}")
    check = manifest["check_vs_onnxruntime"]
    assert check["max_abs_diff"] < 1e-6
    assert check["inconclusive"] == why
    summary = LibraryReport.from_manifest(manifest).summary_lines()[0]
    assert f"(inconclusive: {why})" in summary


# -- the untuned baseline: once per model, target and pipeline -----------------------------


def test_the_baseline_is_measured_once_then_read_from_the_database(
    tiny_cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = _compile(tiny_cnn_path, tmp_path / "first", url)
    assert first["latency"]["baseline"]["source"] == "measured now"
    assert first["latency"]["untuned"]["p50_ms"] > 0
    assert first["speedup_p50"] == pytest.approx(
        first["latency"]["untuned"]["p50_ms"] / first["latency"]["tuned"]["p50_ms"], rel=0.01
    )

    # A cached baseline needs no untuned build at all.
    builds: list[object] = []
    untuned = build.compile_untuned
    monkeypatch.setattr(
        build, "compile_untuned", lambda *a, **k: builds.append(a) or untuned(*a, **k)
    )
    second = _compile(tiny_cnn_path, tmp_path / "second", url)
    assert second["latency"]["baseline"] == {**first["latency"]["baseline"], "source": "cached"}
    assert second["latency"]["untuned"] == first["latency"]["untuned"]
    assert second["reports_not_run"] == []
    assert builds == []

    # Another pipeline (the other layout) is another baseline.
    layout = "NCHW" if first["pipeline"]["layout"] == "NHWC" else "NHWC"
    relaid = _compile(tiny_cnn_path, tmp_path / "relaid", url, layout=layout)
    assert relaid["pipeline"]["layout"] == layout
    assert relaid["latency"]["baseline"]["source"] == "measured now"
    assert len(builds) == 1

    skipped = _compile(tiny_cnn_path, tmp_path / "skipped", url, baseline=False)
    assert skipped["latency"]["baseline"] == {
        "source": "skipped",
        "reason": "--no-baseline",
        "measured_on": None,
        "measured_at": None,
    }
    assert skipped["latency"]["untuned"] is None
    assert skipped["speedup_p50"] is None
    assert len(builds) == 1


def test_a_model_too_large_to_serialize_is_checked_from_its_file_and_not_cached(
    tiny_cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past protobuf's 2 GB, ONNX Runtime reads the file, and the baseline has no model hash.
    monkeypatch.setattr(library_report, "_serialized", lambda validated: None)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for run in ("first", "second"):
        manifest = _compile(tiny_cnn_path, tmp_path / run, url)
        assert manifest["check_vs_onnxruntime"]["max_abs_diff"] < 1e-4
        assert manifest["vs_onnxruntime"]["latency"]["p50_ms"] > 0
        assert manifest["latency"]["baseline"]["source"] == "measured now"


# -- the timer --------------------------------------------------------------------------


def test_a_slow_call_is_timed_until_the_budget_with_at_least_the_minimum_of_samples() -> None:
    calls: list[float] = []

    def slow() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.03)

    started = time.perf_counter()
    report = time_calls(slow, box=TimeBox(budget_sec=0.2, min_samples=3, max_samples=50))
    elapsed = time.perf_counter() - started
    assert report.calls_per_sample == 1
    assert 3 <= report.samples <= 9
    assert report.budget_reached
    assert len(calls) == report.samples + 1  # one untimed warm-up call
    assert elapsed < 0.6
    assert 30 <= report.p50_ms <= report.p90_ms <= report.p99_ms


def test_the_minimum_of_samples_outlasts_the_budget() -> None:
    report = time_calls(
        lambda: time.sleep(0.02),
        box=TimeBox(budget_sec=0.0, min_samples=4, max_samples=50),
        first_call_sec=0.02,
    )
    assert report.samples == 4
    assert report.budget_reached


def test_a_fast_call_is_averaged_per_sample_and_stops_at_the_maximum() -> None:
    counter = iter(range(10**9))
    report = time_calls(
        lambda: next(counter),
        box=TimeBox(budget_sec=5.0, min_samples=3, max_samples=20, min_sample_ms=2.0),
        first_call_sec=1e-5,
    )
    assert report.samples == 20
    assert not report.budget_reached
    assert report.calls_per_sample == 200
    assert next(counter) == 20 * 200  # no warm-up: the first call was already timed
    assert report.p50_ms < 0.01


# -- ONNX Runtime's provider for a target -------------------------------------------------


@pytest.mark.parametrize(
    ("target", "available", "provider", "reason"),
    [
        ("llvm", ["CPUExecutionProvider"], "CPUExecutionProvider", None),
        (
            "cuda",
            ["AzureExecutionProvider", "CPUExecutionProvider"],
            None,
            "this onnxruntime has no CUDAExecutionProvider "
            "(it has AzureExecutionProvider, CPUExecutionProvider)",
        ),
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider", None),
        (
            "vulkan",
            ["CPUExecutionProvider"],
            None,
            "ONNX Runtime has no execution provider for vulkan targets here",
        ),
    ],
)
def test_the_peer_runs_on_the_targets_device_or_is_not_measured(
    target: str, available: list[str], provider: str | None, reason: str | None
) -> None:
    assert peer_provider(tvm.target.Target(target), available) == (provider, reason)


def test_the_report_reads_back_typed_from_a_manifest() -> None:
    tuned = LatencyReport(1.5, 1.75, 2.0, samples=12, calls_per_sample=2, budget_reached=True)
    report = LibraryReport(
        latency=LatencySection(
            tuned=tuned,
            untuned=None,
            baseline=Baseline("not measured", reason="the untuned build failed: boom"),
        ),
        speedup_p50=None,
        check_vs_onnxruntime=OutputCheck(max_abs_diff=0.25),
        vs_onnxruntime=PeerTiming(
            "onnxruntime 1.0", "CPUExecutionProvider", latency=tuned, ratio_p50=1.0, ratio_p99=1.0
        ),
    )
    manifest = json.loads(json.dumps({"tasks": [], **report.as_manifest()}))
    assert LibraryReport.from_manifest(manifest) == report
    assert manifest["reports_not_run"] == [
        {"report": "baseline", "reason": "the untuned build failed: boom"}
    ]
    assert report.summary_lines() == [
        "latency p50: untuned not measured (the untuned build failed: boom), tuned 1.500 ms; "
        "max |diff| vs ONNX Runtime: 2.50e-01",
        "vs onnxruntime 1.0 (CPUExecutionProvider): p50 1.500 ms vs 1.500 ms (1.00x), "
        "p99 2.000 ms vs 2.000 ms (1.00x)",
    ]
