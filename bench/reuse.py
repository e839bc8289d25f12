"""Reuse benchmark: what the tuning database saves, exact and similar, on one machine in one run.

(a) **Warm recompile**: tune model A cold into a fresh SQLite database, then compile it again
    against that database. The second compile runs 0 trials; the ratio is of wall times.
(b) **Similar model**: model B shares A's operator kinds but none of its shapes (the same
    ResNet-style CNN at batch 4 instead of 1). B is tuned twice with the same budget and seed:
    from scratch (an empty database) and warm-started (a copy of the database A was tuned into,
    whose records of A's workloads seed B's search and pre-train its cost model). For each, the
    benchmark records the estimated model latency after every batch (the weighted sum of each
    task's best kernel so far) and reports the trials it needed to get within 5% of the latency
    the from-scratch run ends with.

Every compile runs in a freshly spawned process, through ``tuner.compile_job.compile_model``,
with its defaults (FAST_SEARCH, the budget split evenly over the tasks). It writes
``<out>/reuse-<hostname>-<utc timestamp>.json`` and prints a table.

    .venv/bin/python bench/reuse.py [--trials-a 192] [--trials-b 192] [--seed 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from local_tuning import machine_info, quiet_meta_schedule, versions

SCHEMA_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET = "llvm"
WITHIN = 1.05
"""(b) counts the trials a run needs to reach this multiple of the from-scratch final latency."""


# --------------------------------------------------------------------------------------------
# One compile, in a spawned process
# --------------------------------------------------------------------------------------------


class CurveObserver:
    """Keeps the estimated model latency after every batch of trials."""

    def __init__(self) -> None:
        self.weights: dict[str, int] = {}
        self.curve: list[dict[str, Any]] = []
        self.task_curves: dict[str, list[tuple[int, float | None]]] = {}
        """Per task: (the task's trials, its best run time so far) after each of its batches."""
        self.plan: dict[str, Any] | None = None

    def stage(self, phase: str, message: str) -> None:
        pass

    def planned(self, plan: Any) -> None:
        self.plan = plan.as_dict()

    def tuning_started(self, total_trials: int, tasks: list[Any]) -> None:
        self.weights = {task.name: task.weight for task in tasks}

    def tuning_progress(self, report: Any) -> None:
        best = {name: progress.best_sec for name, progress in report.tasks.items()}
        # Defined once every task being tuned has a valid measurement.
        known = all(best.get(name) is not None for name in self.weights)
        estimate = sum(best[name] * w for name, w in self.weights.items()) if known else None
        self.curve.append({"trials": report.trials, "estimate_sec": estimate})
        for name, progress in report.tasks.items():
            points = self.task_curves.setdefault(name, [])
            if progress.trials and (not points or points[-1][0] != progress.trials):
                points.append((progress.trials, progress.best_sec))

    def tuning_finished(self) -> None:
        pass


def compile_once(
    model_path: str,
    database_url: str,
    out_dir: str,
    trials: int,
    seed: int,
    warm_start: bool,
    trials_per_iter: int | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    from tunefarm.tuner.compile_job import CompileOptions, compile_model
    from tunefarm.tuner.job_spec import JobSpec
    from tunefarm.tuner.search import FAST_SEARCH

    import_sec = time.perf_counter() - started
    quiet_meta_schedule()
    observer = CurveObserver()
    options = CompileOptions(
        model_path=Path(model_path),
        spec=JobSpec.of(TARGET, trials, seed=seed, warm_start=warm_start),
        out_dir=Path(out_dir),
        database_url=database_url,
        search=FAST_SEARCH
        if trials_per_iter is None
        else dataclasses.replace(FAST_SEARCH, num_trials_per_iter=trials_per_iter),
    )
    started = time.perf_counter()
    manifest = compile_model(options, observer=observer).manifest  # type: ignore[arg-type]
    wall_sec = time.perf_counter() - started
    return {
        "import_sec": round(import_sec, 3),
        "wall_sec": round(wall_sec, 3),
        "tuning_sec": manifest["timings"]["tuning_sec"],
        "trials_run": manifest["tuning"]["trials_run"],
        "failed_trials": manifest["tuning"]["failed_trials"],
        "warm_start": manifest["tuning"].get("warm_start"),
        "coverage_before_tuning": manifest["coverage_before_tuning"],
        "tuned_p50_ms": manifest["latency"]["tuned"]["p50_ms"],
        "untuned_p50_ms": manifest["latency"]["untuned"]["p50_ms"],
        "tasks": [
            {k: task.get(k) for k in ("name", "trials", "best_latency_us", "source", "warm_start")}
            for task in manifest["tasks"]
        ],
        "curve": observer.curve,
        "task_curves": observer.task_curves,
    }


def run_compile(*args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(compile_once, *args).result()


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def trials_to_reach(curve: list[dict[str, Any]], target_sec: float) -> int | None:
    """Trials after which the run's estimate first was at most ``target_sec``."""
    for point in curve:
        if point["estimate_sec"] is not None and point["estimate_sec"] <= target_sec:
            return int(point["trials"])
    return None


def per_task_trials_to_reach(
    run: dict[str, Any], reference: dict[str, Any], within: float
) -> dict[str, Any]:
    """Trials of each task until its best kernel is within ``within`` of ``reference``'s final
    best for that task, and their sum. Every task within the factor puts the model's estimated
    latency within it too, so the sum is the trials the run needed to reach the reference."""
    tasks: dict[str, int | None] = {}
    for name, ref_points in reference["task_curves"].items():
        finals = [best for _, best in ref_points if best is not None]
        if not finals:
            continue  # no valid measurement in the reference: nothing to reach
        goal = min(finals) * within
        points = run["task_curves"].get(name, [])
        tasks[name] = next(
            (trials for trials, best in points if best is not None and best <= goal), None
        )
    reached = [trials for trials in tasks.values() if trials is not None]
    return {
        "per_task": tasks,
        "tasks_not_reached": sorted(name for name, trials in tasks.items() if trials is None),
        "total": sum(reached) if len(reached) == len(tasks) else None,
    }


def final_estimate(curve: list[dict[str, Any]]) -> float | None:
    estimates = [p["estimate_sec"] for p in curve if p["estimate_sec"] is not None]
    return min(estimates) if estimates else None


def write_models(directory: Path) -> dict[str, Any]:
    import onnx

    from tunefarm.tuner.sample_models import small_resnet

    models = {
        "A": {"sample": "small-resnet", "batch": 1, "image_size": 32, "channels": 16},
        "B": {"sample": "small-resnet", "batch": 4, "image_size": 32, "channels": 16},
    }
    for name, spec in models.items():
        path = directory / f"{name}.onnx"
        onnx.save(
            small_resnet(
                batch=spec["batch"], image_size=spec["image_size"], channels=spec["channels"]
            ),
            str(path),
        )
        spec["path"] = str(path)
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials-a", type=int, default=192, help="budget of A's cold tune")
    parser.add_argument("--trials-b", type=int, default=192, help="budget of each run of B")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--trials-per-iter",
        type=int,
        default=8,
        help="batch size of B's runs: the resolution of the trials-to-reach count",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    started_at = datetime.now(timezone.utc)
    scratch = Path(tempfile.mkdtemp(prefix="tunefarm-reuse-"))
    models = write_models(scratch)
    a_db = scratch / "a.db"
    url = "sqlite:///{}".format

    print("(a) model A cold", file=sys.stderr)
    cold = run_compile(
        models["A"]["path"], url(a_db), str(scratch / "a-cold"), args.trials_a, args.seed, True
    )
    # B's warm start begins from the database exactly as A's cold tune left it.
    # The backup API, not a file copy: the database runs in WAL mode.
    with sqlite3.connect(a_db) as source, sqlite3.connect(scratch / "b-warm.db") as copy:
        source.backup(copy)
    print("(a) model A warm recompile", file=sys.stderr)
    warm = run_compile(
        models["A"]["path"], url(a_db), str(scratch / "a-warm"), args.trials_a, args.seed, True
    )
    print("(b) model B from scratch", file=sys.stderr)
    b_scratch = run_compile(
        models["B"]["path"],
        url(scratch / "b-scratch.db"),
        str(scratch / "b-scratch"),
        args.trials_b,
        args.seed,
        False,
        args.trials_per_iter,
    )
    print("(b) model B warm-started", file=sys.stderr)
    b_warm = run_compile(
        models["B"]["path"],
        url(scratch / "b-warm.db"),
        str(scratch / "b-warm"),
        args.trials_b,
        args.seed,
        True,
        args.trials_per_iter,
    )

    scratch_final = final_estimate(b_scratch["curve"])
    goal_sec = scratch_final * WITHIN if scratch_final is not None else None
    reach_scratch = trials_to_reach(b_scratch["curve"], goal_sec) if goal_sec else None
    reach_warm = trials_to_reach(b_warm["curve"], goal_sec) if goal_sec else None
    per_task = {
        "scratch": per_task_trials_to_reach(b_scratch, b_scratch, WITHIN),
        "warm_started": per_task_trials_to_reach(b_warm, b_scratch, WITHIN),
    }
    totals = (per_task["scratch"]["total"], per_task["warm_started"]["total"])
    result = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "reuse",
        "started_at": started_at.isoformat(),
        "machine": machine_info(),
        "versions": versions(),
        "settings": {
            "target": TARGET,
            "trials_a": args.trials_a,
            "trials_b": args.trials_b,
            "seed": args.seed,
            "within": WITHIN,
            "search": "compile_model defaults (FAST_SEARCH, even split, up to 4 rounds); B's "
            "runs with FAST_SEARCH's trials per iteration set to trials_per_iter",
            "trials_per_iter": args.trials_per_iter,
        },
        "models": models,
        "a_warm_recompile": {
            "cold": cold,
            "warm": warm,
            "wall_ratio_cold_over_warm": round(cold["wall_sec"] / warm["wall_sec"], 2),
        },
        "b_similar_model": {
            "scratch": b_scratch,
            "warm_started": b_warm,
            "scratch_final_estimate_ms": scratch_final * 1e3 if scratch_final else None,
            "goal_estimate_ms": goal_sec * 1e3 if goal_sec else None,
            "trials_to_goal": {"scratch": reach_scratch, "warm_started": reach_warm},
            "per_task_trials_to_goal": per_task,
            "warm_over_scratch_per_task_trials": round(totals[1] / totals[0], 3)
            if totals[0] and totals[1] is not None
            else None,
            "warm_over_scratch_trials": round(reach_warm / reach_scratch, 3)
            if reach_warm is not None and reach_scratch
            else None,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"reuse-{machine_info()['hostname']}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {path}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    a = result["a_warm_recompile"]
    b = result["b_similar_model"]
    print(
        f"(a) warm recompile: cold {a['cold']['wall_sec']:.1f} s "
        f"({a['cold']['trials_run']} trials), warm {a['warm']['wall_sec']:.1f} s "
        f"({a['warm']['trials_run']} trials): {a['wall_ratio_cold_over_warm']}x"
    )
    reach = b["trials_to_goal"]
    print(
        f"(b) similar model: from-scratch final estimate {b['scratch_final_estimate_ms']} ms; "
        f"trials to within {WITHIN}x of it: scratch {reach['scratch']}, "
        f"warm-started {reach['warm_started']} (ratio {b['warm_over_scratch_trials']})"
    )
    per_task = b["per_task_trials_to_goal"]
    print(
        f"    per task (every task within {WITHIN}x of its from-scratch best): scratch "
        f"{per_task['scratch']['total']}, warm-started {per_task['warm_started']['total']} "
        f"(ratio {b['warm_over_scratch_per_task_trials']}; not reached: "
        f"{per_task['warm_started']['tasks_not_reached']})"
    )
    for name in ("scratch", "warm_started"):
        run = b[name]
        print(
            f"    {name}: {run['trials_run']} trials, tuned p50 {run['tuned_p50_ms']:.3f} ms "
            f"(untuned {run['untuned_p50_ms']:.3f} ms)"
        )


if __name__ == "__main__":
    sys.exit(main())
