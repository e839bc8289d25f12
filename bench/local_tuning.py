"""Local tuning benchmark: our tuning path against stock MetaSchedule, on one model and machine.

Measures, in one run:

1. trials/s of our path (``tuner.search.tune`` with ``CandidateWriter`` + ``TrialRunner`` in a
   ``WarmPool``, records in SQLite) against stock ``tune_relax`` (``LocalBuilder``,
   ``LocalRunner``, ``JSONDatabase``), at 16 and 64 trials per iteration, plus our
   ``FAST_SEARCH`` profile;
2. cold compile against warm recompile of ``tuner.compile_job.compile_model`` (same fresh SQLite
   database twice: the second run reuses the records and runs no trials).

It writes ``<out>/local_tuning-<hostname>-<utc timestamp>.json`` and prints a short table.

    .venv/bin/python bench/local_tuning.py [--trials 64] [--model PATH] [--out DIR] [--skip-stock]

TVM and tunefarm are imported inside functions, not at the top: the cold compile runs in a
freshly spawned process so that it pays every import a real first compile pays.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvm.ir import IRModule
    from tvm.target import Target

    from tunefarm.tuner.search import SearchSettings

SCHEMA_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET = "llvm"
TRIALS_PER_ITER = (16, 64)
WARM_UP_TRIALS = 4
PROFILE_GROUPS: dict[str, tuple[str, ...]] = {
    "search": ("EvoSearch/",),
    "build_and_measure": ("SendToBuilder", "SendToRunner", "JoinRunnerFutures"),
    "cost_model": ("MeasureCallback/UpdateCostModel",),
    "database": ("MeasureCallback/AddToDatabase", "ApplyHistoryBest"),
}
# The evaluator config of both sides: tuner.trial.MeasureSettings' defaults, given to the stock
# LocalRunner too, so that both time each candidate the same way.
MEASURE = {"number": 3, "repeat": 1, "min_repeat_ms": 20, "enable_cpu_cache_flush": False}


# --------------------------------------------------------------------------------------------
# Model and machine
# --------------------------------------------------------------------------------------------


def build_default_model(path: Path) -> dict[str, Any]:
    """Write the small CNN this benchmark tunes by default; return its description."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    initializers = [
        weight("w1", (16, 3, 3, 3)),
        weight("b1", (16,)),
        weight("w2", (32, 16, 3, 3)),
        weight("b2", (32,)),
        weight("w3", (10, 32)),
        weight("b3", (10,)),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {
        "source": "built-in",
        "description": (
            "input 1x3x56x56 f32; Conv 3->16 3x3 pad1 +bias, Relu, MaxPool 2x2/2, "
            "Conv 16->32 3x3 pad1 +bias, Relu, GlobalAveragePool, Flatten, Gemm 32->10"
        ),
        "opset": 17,
    }


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "processor": platform.processor() or None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import tvm

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "tvm": str(tvm.__version__),
        "apache-tvm-ffi": installed("apache-tvm-ffi"),
        "xgboost": installed("xgboost-cpu") or installed("xgboost"),
        "tunefarm": installed("tunefarm"),
        "cloudpickle": installed("cloudpickle") or _module_version("cloudpickle"),
    }


def _module_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return f"{getattr(module, '__version__', '?')} ({Path(module.__file__ or '?').parent})"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet_meta_schedule() -> None:
    """Keep MetaSchedule's task tables off stdout, for every run alike.

    ``tune()`` quiets the logger only while its level is unset, and MetaSchedule's
    ``create_loggers`` sets it to DEBUG during the first tuning call of a process, so without
    this every later run in the same process prints its tables and XGBoost log to stdout.
    """
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def stock_prerequisite_error() -> str | None:
    """Stock LocalBuilder/LocalRunner ship work to popen workers with cloudpickle."""
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return (
            "the stock path needs cloudpickle (TVM's PopenPoolExecutor), which tunefarm does "
            "not depend on: pip install cloudpickle, put it on PYTHONPATH, or pass --skip-stock"
        )
    return None


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` leaves the wall seconds in ``t["sec"]``."""
    timing = {"sec": 0.0}
    started = time.perf_counter()
    try:
        yield timing
    finally:
        timing["sec"] = time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# Cold compile vs warm recompile (runs in a spawned process)
# --------------------------------------------------------------------------------------------


def compile_phase(model_path: str, trials: int, seed: int, scratch: str) -> dict[str, Any]:
    """Import tunefarm, then ``compile_model`` twice against one fresh SQLite database."""
    with stopwatch() as imports:
        from tunefarm.tuner.compile_job import CompileOptions, compile_model
        from tunefarm.tuner.job_spec import JobSpec

    database_url = f"sqlite:///{Path(scratch) / 'compile.db'}"
    runs: dict[str, Any] = {}
    for name in ("cold", "warm"):
        options = CompileOptions(
            model_path=Path(model_path),
            spec=JobSpec.of(TARGET, trials, seed=seed),
            out_dir=Path(scratch) / name,
            database_url=database_url,
        )
        quiet_meta_schedule()
        with stopwatch() as wall:
            manifest = compile_model(options).manifest
        runs[name] = {
            "wall_sec": round(wall["sec"], 3),
            "manifest_total_sec": manifest["timings"]["total_sec"],
            "manifest_tuning_sec": manifest["timings"]["tuning_sec"],
            "trials_run": manifest["tuning"]["trials_run"],
            "failed_trials": manifest["tuning"]["failed_trials"],
            "coverage_before_tuning": manifest["coverage_before_tuning"],
            "tuned_p50_ms": manifest["latency"]["tuned"]["p50_ms"],
            "untuned_p50_ms": manifest["latency"]["untuned"]["p50_ms"],
        }
    return {"import_sec": round(imports["sec"], 3), "database_url": database_url, **runs}


def run_compile_phase(model_path: Path, trials: int, seed: int, scratch: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        future = executor.submit(compile_phase, str(model_path), trials, seed, str(scratch))
        result = future.result()
    cold, warm = result["cold"], result["warm"]
    # compile_model's own tuning rate: FAST_SEARCH, the budget split evenly over the tasks, the
    # WarmPool start included (tuning_sec covers it).
    cold["tuning_trials_per_sec"] = _rate(cold["trials_run"], cold["manifest_tuning_sec"])
    result["ratio_cold_over_warm"] = {
        "wall": _ratio(cold["wall_sec"], warm["wall_sec"]),
        "manifest_total": _ratio(cold["manifest_total_sec"], warm["manifest_total_sec"]),
        "wall_incl_imports": _ratio(cold["wall_sec"] + result["import_sec"], warm["wall_sec"]),
    }
    return result


# --------------------------------------------------------------------------------------------
# Trials/s: stock tune_relax vs our tune()
# --------------------------------------------------------------------------------------------


def prepare_module(model_path: Path, target: Target, *, fp16: bool = False) -> IRModule:
    """Our import and pass pipeline; both sides tune the tasks of the same module."""
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline

    validated = validate_onnx_model(model_path)
    options = PipelineOptions(fp16=fp16)
    return run_pipeline(import_onnx(validated), target=target, options=options).mod


def stock_task_order(mod: IRModule, target: Target) -> list[str]:
    """Task names in ``tune_relax``'s order (``extract_tasks``); ours is sorted by FLOPs."""
    import tvm.s_tir.meta_schedule as ms

    return [str(task.task_name) for task in ms.relax_integration.extract_tasks(mod, target)]


def profile_table(profiler: Any) -> dict[str, float]:
    entries = {str(name): round(float(sec), 4) for name, sec in profiler.get().items()}
    return dict(sorted(entries.items(), key=lambda item: -item[1]))


def profile_fields(profiler: Any) -> dict[str, Any]:
    table = profile_table(profiler)
    return {"profiler_sec": table, "profiler_summary": profile_summary(table)}


def profile_summary(table: dict[str, float]) -> dict[str, Any]:
    """MetaSchedule's profiler entries grouped into where the time went."""
    total = table.get("Total", 0.0)
    groups = {name: 0.0 for name in PROFILE_GROUPS}
    for entry, sec in table.items():
        if entry == "Total":
            continue
        group = next(
            (name for name, prefixes in PROFILE_GROUPS.items() if entry.startswith(prefixes)),
            "other",
        )
        groups[group] = groups.get(group, 0.0) + sec
    groups["unprofiled"] = max(0.0, total - sum(groups.values()))
    return {
        name: {"sec": round(sec, 3), "share": _ratio(sec, total)} for name, sec in groups.items()
    }


def per_task_trials(report: Any) -> dict[str, int]:
    return {name: task.trials for name, task in report.tasks.items() if task.trials}


def run_stock(
    mod: IRModule,
    target: Target,
    *,
    trials: int,
    per_task: int,
    trials_per_iter: int,
    seed: int,
    order: list[str],
    work_dir: Path,
    builder: Any = "local",
) -> dict[str, Any]:
    import tvm.s_tir.meta_schedule as ms

    from tunefarm.tuner.search import ProgressCallback, TaskProgress, TuningReport

    runner = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(**MEASURE))
    counter = ProgressCallback(
        order, TuningReport(tasks={name: TaskProgress(name) for name in order}), None
    )
    quiet_meta_schedule()
    with ms.Profiler() as profiler, stopwatch() as wall:
        ms.relax_integration.tune_relax(
            mod,
            params={},
            target=target,
            work_dir=str(work_dir),
            max_trials_global=trials,
            max_trials_per_task=per_task,
            num_trials_per_iter=trials_per_iter,
            builder=builder,
            runner=runner,
            database="json",
            measure_callbacks=[*ms.MeasureCallback.create("default"), counter],
            seed=seed,
        )
    report = counter.report
    return {
        "side": "stock",
        "num_trials_per_iter": trials_per_iter,
        "trials_run": report.trials,
        "failed_trials": report.failures,
        "wall_sec": round(wall["sec"], 3),
        "trials_per_sec": _rate(report.trials, wall["sec"]),
        "trials_per_task": per_task_trials(report),
        **profile_fields(profiler),
    }


def run_ours(
    mod: IRModule,
    target: Target,
    *,
    settings: SearchSettings,
    trials: int,
    per_task: int,
    seed: int,
    order: list[str],
    workers: int,
    work_dir: Path,
) -> dict[str, Any]:
    import tvm.s_tir.meta_schedule as ms

    from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
    from tunefarm.tuner.search import tune
    from tunefarm.tuner.tasks import extract_tuning_tasks
    from tunefarm.tuner.trial import MeasureSettings
    from tunefarm.tuner.warm_pool import WarmPool
    from tunefarm.tuning_db import SqlDatabase

    database = SqlDatabase(f"sqlite:///{work_dir / 'tuning.db'}", target=target)
    builder = CandidateWriter(str(work_dir / "candidates"))
    pool = WarmPool(workers)
    with stopwatch() as pool_start:
        pool.start()
    try:
        runner = TrialRunner(pool, settings=MeasureSettings(**MEASURE))
        quiet_meta_schedule()
        with ms.Profiler() as profiler, stopwatch() as wall:
            # Like tune_relax, the timed region extracts the tasks; both sides see them in
            # tune_relax's order, so the gradient scheduler visits the same tasks first.
            with stopwatch() as extract:
                tasks = extract_tuning_tasks(mod, target=target)
                tasks.sort(key=lambda task: order.index(task.name))
            report = tune(
                tasks,
                target=target,
                database=database,
                builder=builder,
                runner=runner,
                total_trials=trials,
                max_trials_per_task=per_task,
                settings=settings,
                seed=seed,
                work_dir=str(work_dir / "logs"),
            )
    finally:
        pool.close()
    return {
        "side": "ours",
        "search_settings": dataclasses.asdict(settings),
        "num_trials_per_iter": min(settings.num_trials_per_iter, per_task),
        "trials_run": report.trials,
        "failed_trials": report.failures,
        "wall_sec": round(wall["sec"], 3),
        "extract_sec": round(extract["sec"], 4),
        "trials_per_sec": _rate(report.trials, wall["sec"]),
        "pool_start_sec": round(pool_start["sec"], 3),
        "trials_per_sec_incl_pool_start": _rate(report.trials, wall["sec"] + pool_start["sec"]),
        "trials_per_task": per_task_trials(report),
        "pool_restarts": pool.restarts,
        **profile_fields(profiler),
    }


def import_untimed() -> dict[str, float]:
    """Both sides' tuning loops need the tensor intrinsics and XGBoost; load them untimed."""
    with stopwatch() as intrinsics:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    with stopwatch() as xgb:
        import xgboost  # noqa: F401
    return {
        "tensor_intrin_import_sec": round(intrinsics["sec"], 3),
        "xgboost_import_sec": round(xgb["sec"], 3),
    }


def run_throughput(
    args: argparse.Namespace, model_path: Path, scratch: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every timed tuning run; returns the setup facts and one row per comparison."""
    from tunefarm.tuner.search import FAST_SEARCH, SearchSettings
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuner.warm_pool import default_worker_count

    target = parse_target(TARGET)
    setup: dict[str, Any] = {"target": str(target), **import_untimed()}
    with stopwatch() as prep:
        mod = prepare_module(model_path, target)
        order = stock_task_order(mod, target)
    setup["import_and_pipeline_sec"] = round(prep["sec"], 3)
    setup["tasks_in_tune_relax_order"] = order
    per_task = args.max_trials_per_task or args.trials
    setup["max_trials_per_task"] = per_task
    workers = args.workers or default_worker_count(target.kind.name)
    setup["ours_workers"] = workers

    common = {"trials": args.trials, "per_task": per_task, "seed": args.seed, "order": order}
    # One short untimed run first, so that no timed run pays the process's first-tuning costs
    # (lazy imports, LLVM and XGBoost start-up).
    print("warm-up (untimed) ...", flush=True)
    with stopwatch() as warm_up:
        run_ours(
            mod,
            target,
            settings=FAST_SEARCH,
            workers=workers,
            work_dir=scratch / "warm-up",
            **{**common, "trials": WARM_UP_TRIALS, "per_task": WARM_UP_TRIALS},
        )
    setup["warm_up"] = {"trials": WARM_UP_TRIALS, "sec": round(warm_up["sec"], 3)}
    stock_runs: dict[int, dict[str, Any]] = {}
    rows = []
    for per_iter in TRIALS_PER_ITER:
        if not args.skip_stock:
            print(f"stock tune_relax, {per_iter} trials/iter ...", flush=True)
            stock_runs[per_iter] = run_stock(
                mod,
                target,
                trials_per_iter=per_iter,
                work_dir=scratch / f"stock-{per_iter}",
                **common,
            )
        print(f"ours, SearchSettings(num_trials_per_iter={per_iter}) ...", flush=True)
        ours = run_ours(
            mod,
            target,
            settings=SearchSettings(num_trials_per_iter=per_iter),
            workers=workers,
            work_dir=scratch / f"ours-{per_iter}",
            **common,
        )
        rows.append(_row(f"{per_iter} trials/iter", stock_runs.get(per_iter), ours))
    print("ours, FAST_SEARCH ...", flush=True)
    fast = run_ours(
        mod,
        target,
        settings=FAST_SEARCH,
        workers=workers,
        work_dir=scratch / "ours-fast",
        **common,
    )
    rows.append(_row("FAST_SEARCH vs stock 64/iter", stock_runs.get(64), fast))
    return setup, rows


def _row(label: str, stock: dict[str, Any] | None, ours: dict[str, Any]) -> dict[str, Any]:
    ratio = _ratio(ours["trials_per_sec"], stock["trials_per_sec"]) if stock else None
    return {"label": label, "stock": stock, "ours": ours, "ratio_ours_over_stock": ratio}


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 3) if seconds > 0 else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def settings_record(args: argparse.Namespace, model: dict[str, Any]) -> dict[str, Any]:
    per_task = args.max_trials_per_task or args.trials
    return {
        "trials": args.trials,
        "seed": args.seed,
        "target": TARGET,
        "skip_stock": args.skip_stock,
        "max_trials_per_task": per_task,
        "trials_per_iter_rows": list(TRIALS_PER_ITER),
        "model": model,
        "evaluator_config": MEASURE,
        "stock": {
            "call": "tvm.s_tir.meta_schedule.relax_integration.tune_relax",
            "builder": "'local' (LocalBuilder: a new PopenPool of cpu_count workers per batch)",
            "runner": f"LocalRunner(evaluator_config=EvaluatorConfig(**{MEASURE}))",
            "runner_note": "same evaluator config as ours; its one popen worker starts lazily, "
            "inside the timed call",
            "database": "'json' (JSONDatabase in a fresh work_dir per run)",
            "search": "MetaSchedule defaults (EvolutionarySearch, population 512)",
        },
        "ours": {
            "call": "tuner.search.tune",
            "builder": "tuner.pool_measure.CandidateWriter",
            "runner": f"tuner.pool_measure.TrialRunner(WarmPool, MeasureSettings(**{MEASURE}))",
            "database": "tuning_db.SqlDatabase on a fresh SQLite file per run",
            "workers": args.workers or "tuner.warm_pool.default_worker_count('llvm')",
        },
        "fairness": [
            "both sides tune the tasks of the same module (our import + pass pipeline)",
            "tvm.s_tir.tensor_intrin and xgboost are imported before any timed region",
            "an untimed 4-trial warm-up run comes before the timed runs",
            "both timed regions include task extraction (tune_relax does it inside)",
            "ours gets the tasks in tune_relax's order and the same max_trials_per_task, "
            "max_trials_global, num_trials_per_iter and seed",
            "the WarmPool starts before the timed region; its start time is recorded apart",
            "trials/s = trials that came back (failures included) / wall seconds of the call",
            "the FAST_SEARCH row is compared with stock's defaults (64 trials/iter)",
            "cold/warm compile runs in a freshly spawned process (import_sec recorded apart)",
        ],
    }


def print_table(result: dict[str, Any]) -> None:
    def rate(run: dict[str, Any] | None) -> str:
        if run is None:
            return "      -"
        return f"{run['trials_per_sec']:7.2f}"

    def ratio(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "-"

    print()
    print(f"trials/s ({result['settings']['trials']} trials, same seed, same tasks)")
    print(f"  {'row':<30} {'stock':>7} {'ours':>7}  ours/stock")
    for row in result["trials_per_sec"]:
        stock, ours = row["stock"], row["ours"]
        print(
            f"  {row['label']:<30} {rate(stock)} {rate(ours)}  "
            f"{ratio(row['ratio_ours_over_stock'])}"
            f"   (trials {stock['trials_run'] if stock else '-'}/{ours['trials_run']})"
        )
    compile_result = result["compile"]
    cold, warm = compile_result["cold"], compile_result["warm"]
    ratios = compile_result["ratio_cold_over_warm"]
    print()
    print(f"compile_model, fresh process (importing tunefarm: {compile_result['import_sec']} s)")
    print(f"  {'':<12} {'wall s':>8} {'total_sec':>10} {'trials':>7}")
    for name, run in (("cold", cold), ("warm", warm)):
        print(
            f"  {name:<12} {run['wall_sec']:8.2f} {run['manifest_total_sec']:10.2f} "
            f"{run['trials_run']:7d}"
        )
    print(f"  {'cold/warm':<12} {ratio(ratios['wall']):>8} {ratio(ratios['manifest_total']):>10}")
    print(f"  cold tuning: {cold['tuning_trials_per_sec']} trials/s (FAST_SEARCH, even split)")
    fast = result["trials_per_sec"][-1]["ours"]
    print()
    print("profiler, ours FAST_SEARCH (top 6, s):")
    for name, sec in list(fast["profiler_sec"].items())[:6]:
        print(f"  {name:<40} {sec:8.2f}")
    shares = ", ".join(
        f"{name} {group['share'] * 100:.0f}%"
        for name, group in fast["profiler_summary"].items()
        if (group["share"] or 0) >= 0.005
    )
    print(f"  share of Total: {shares}")


def result_path(out_dir: Path, started: datetime) -> Path:
    host = re.sub(r"[^A-Za-z0-9._-]", "_", platform.node() or "unknown")
    return out_dir / f"local_tuning-{host}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="trial budget of every run")
    parser.add_argument("--model", type=Path, help="an ONNX file instead of the built-in CNN")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--skip-stock", action="store_true", help="do not run tune_relax")
    parser.add_argument("--seed", type=int, default=1, help="seed of every run")
    parser.add_argument(
        "--max-trials-per-task",
        type=int,
        help="per-task cap of every trials/s run (default: --trials, as tune_relax)",
    )
    parser.add_argument("--workers", type=int, help="WarmPool workers (default: ours)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = None if args.skip_stock else stock_prerequisite_error()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    with stopwatch() as total, tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        scratch = Path(tmp)
        if args.model is not None:
            model_path = args.model.resolve()
            model = {"source": "--model", "path": str(model_path)}
        else:
            model_path = scratch / "bench_cnn.onnx"
            model = build_default_model(model_path)
        model["sha256"] = sha256(model_path)

        print("cold and warm compile_model in a fresh process ...", flush=True)
        compile_result = run_compile_phase(model_path, args.trials, args.seed, scratch / "compile")
        setup, rows = run_throughput(args, model_path, scratch)

    result = {
        "benchmark": "local_tuning",
        "schema_version": SCHEMA_VERSION,
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_sec": round(total["sec"], 1),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings_record(args, model),
        "setup": setup,
        "trials_per_sec": rows,
        "compile": compile_result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = result_path(args.out, started)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {path} ({result['wall_sec']} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
