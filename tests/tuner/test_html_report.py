"""report.html (issue 20): curves from the trials on record, and names shown as text."""

from __future__ import annotations

from typing import Any

from tunefarm.tuner.html_report import model_curve, render_report, task_curves
from tunefarm.tuning_db.tuning_curves import Trial

HOSTILE = "<script>alert(1)</script>"


def _manifest(**changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "model": {"path": "m.onnx"},
        "target": {"requested": "llvm", "fingerprint": "f"},
        "machine": {"hostname": "host"},
        "pipeline": {"name": "tunefarm-default", "layout": "NHWC", "fp16": False},
        "latency": {"tuned": {"p50_ms": 1.5, "p99_ms": 2.0}, "untuned": {"p50_ms": 3.0}},
        "speedup_p50": 2.0,
        "vs_onnxruntime": {"peer": "onnxruntime", "latency": None, "not_measured": "no"},
        "tuning": {"trials_run": 3},
        "coverage_before_tuning": {
            "tasks_covered": 0,
            "tasks_total": 2,
            "tasks_percent": 0.0,
            "flops_percent": 0.0,
            "trial_budget": 3,
        },
        "tasks": [
            {
                "name": "conv",
                "workload_key": "a",
                "weight": 2,
                "trials": 2,
                "best_latency_us": 5.0,
                "source": "tuned",
            },
            {
                "name": "relu",
                "workload_key": "b",
                "weight": 1,
                "trials": 1,
                "best_latency_us": 1.0,
                "source": "tuned",
            },
        ],
        "inputs": [{"name": "image", "shape": [1, 3], "dtype": "float32"}],
        "outputs": [{"name": "out", "shape": [1], "dtype": "float32"}],
        "library": {"file": "model.so", "sha256": "0" * 64},
    }
    manifest.update(changes)
    return manifest


TRIALS = [
    Trial("a", 9e-6),
    Trial("a", None),  # a failed candidate still counts as a trial
    Trial("b", 1e-6),
    Trial("a", 5e-6),
]


def test_the_curves_are_best_so_far() -> None:
    curves = task_curves(TRIALS)
    assert curves["a"].points == [9.0, 9.0, 5.0]
    assert curves["b"].points == [1.0]
    # The model's estimate exists once every task has a time: 2 * 9 + 1, then 2 * 5 + 1.
    assert model_curve(TRIALS, {"a": 2, "b": 1}).points == [None, None, 19.0, 11.0]


def test_the_report_is_self_contained_and_draws_the_curves() -> None:
    page = render_report(_manifest(), TRIALS)
    assert page.count("<polyline") == 1 + 2  # the model's, and one per task
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_names_from_the_model_render_as_text() -> None:
    hostile_input = [{"name": HOSTILE, "shape": [1], "dtype": "float32"}]
    page = render_report(_manifest(inputs=hostile_input, model={"path": HOSTILE}), TRIALS)
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
