"""tunefarm's CPU libraries against ONNX Runtime, side by side on one machine in one run (issue 15).

For each model of ``cpu_models`` (real architectures at their real shapes, random weights):

1. **ONNX Runtime**, CPU execution provider, default session options (threads included);
2. **tunefarm ``--trials 0``**: ``tuner.compile_job.compile_model`` into a fresh SQLite database;
3. **tunefarm tuned**: the same with ``--trials N`` (default 2000) into another fresh database,
   so the row costs what tuning the model from nothing costs.

Every compile runs in a freshly spawned process, and so does every timing. The libraries are
timed here, not by the compile: ``model.so`` loaded with ``tvm.runtime.load_module`` behind a
``relax.VirtualMachine``, and the ONNX Runtime session, go through one timing loop (single calls
timed with ``time.perf_counter`` after a warm-up, time-boxed) on the same input. Each row has
p50 and p99, the ratio of its p50 to ONNX Runtime's, the largest output difference against ONNX
Runtime, the compile's wall time, and per task: weight, FLOPs, trials, best record, source, the
task's share of the model's time and its GFLOP/s, both from the records (weight x best) and as
measured in the library (each kernel call timed through the VM's instrument hook).

It writes ``<out>/cpu_peers-<hostname>-<UTC timestamp>.json`` after every row, and prints a
table at the end.

    .venv/bin/python bench/cpu_peers.py [--models squeezenet,resnet50] [--trials 2000]
        [--skip-tuned] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from local_tuning import machine_info, quiet_meta_schedule, stopwatch, versions

SCHEMA_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET = "llvm"
WANTED_OPTIONS: dict[str, Any] = {"baseline": False}
"""CompileOptions fields the benchmark sets beyond the job's own (model, target, database, out,
trials, seed), each passed only where ``CompileOptions`` has the field. ``baseline``: the
untuned build that the compile times for its manifest; this benchmark times the libraries
itself, and on a large model that baseline takes minutes (issue 15, item 5)."""


# --------------------------------------------------------------------------------------------
# Timing: one loop for ONNX Runtime and the tunefarm libraries
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    seconds: float = 5.0
    """Time box of the timed calls; at least ``min_samples`` are timed whatever it takes."""
    min_samples: int = 5
    max_samples: int = 2000
    warmup_seconds: float = 1.0
    """Calls before timing, at least ``warmup_calls`` of them."""
    warmup_calls: int = 2
    profile_runs: int = 3
    """Library runs with every kernel call timed (the per-task split); 0 skips them."""


def time_calls(run: Callable[[], Any], settings: TimingSettings) -> dict[str, Any]:
    """p50/p90/p99 in ms of single calls of ``run`` after a warm-up, time-boxed.

    The machine's load average before and after goes with them: other work on the same cores
    (a shared machine) slows a multi-threaded peer far more than its share of the CPU.
    """
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    warmup = 0
    while warmup < settings.warmup_calls or time.perf_counter() - started < settings.warmup_seconds:
        run()
        warmup += 1
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < settings.max_samples and (
        len(samples) < settings.min_samples or time.perf_counter() - started < settings.seconds
    ):
        call_started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - call_started) * 1e3)
    values = np.array(samples)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p90_ms": round(float(np.percentile(values, 90)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
        "samples": len(samples),
        "warmup_calls": warmup,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def measure_onnxruntime(
    model_path: str, feed: dict[str, np.ndarray], settings: TimingSettings
) -> dict[str, Any]:
    """ONNX Runtime's CPU EP with default session options (runs in a spawned process)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feed)
    timing = time_calls(lambda: session.run(None, feed), settings)
    options = session.get_session_options()
    return {
        **timing,
        "providers": session.get_providers(),
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "outputs": [np.asarray(value) for value in outputs],
    }


def measure_library(
    library_path: str, feed: dict[str, np.ndarray], settings: TimingSettings
) -> dict[str, Any]:
    """A tunefarm ``model.so`` behind a Relax VM, timed as ONNX Runtime is (spawned process).

    TVM's thread pool gets every physical core, as tunefarm sets it for its own processes and
    as the README tells users to (its own default is one thread on a 2-core VM without SMT).
    """
    from tunefarm.tuner.cpu_threads import use_physical_cores

    use_physical_cores()
    import tvm
    from tvm import relax

    device = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(library_path), device)
    # The inputs in the ONNX graph's order, which is the order of main's parameters.
    args = [tvm.runtime.tensor(array, device=device) for array in feed.values()]
    main = vm["main"]
    outputs = main(*args)
    timing = time_calls(lambda: main(*args), settings)
    return {
        **timing,
        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
        "kernels": profile_kernels(vm, args, runs=settings.profile_runs),
        "outputs": [value.numpy() for value in flatten(outputs)],
    }


def profile_kernels(vm: Any, args: list[Any], *, runs: int) -> dict[str, dict[str, float]]:
    """Per kernel symbol: calls per run and the median over ``runs`` of its time per run.

    Each call is timed between the VM's before- and after-call hooks, so a kernel's time holds
    a few microseconds of hook overhead per call.
    """
    per_run: list[dict[str, list[float]]] = []
    opened: dict[str, float] = {}

    def hook(func: Any, symbol: str, before_run: bool, ret_value: Any, *call_args: Any) -> int:
        now = time.perf_counter()
        if before_run:
            opened[symbol] = now
        else:
            per_run[-1].setdefault(symbol, []).append(now - opened.pop(symbol))
        return 0  # VMInstrumentReturnKind.NoOp

    if runs <= 0:
        return {}
    vm.set_instrument(hook)
    for _ in range(runs):
        per_run.append({})
        vm["main"](*args)
    vm.set_instrument(None)
    return {
        symbol: {
            "calls": len(per_run[0].get(symbol, [])),
            "us_per_run": round(
                statistics.median(sum(run.get(symbol, [])) for run in per_run) * 1e6, 2
            ),
        }
        for symbol in per_run[0]
    }


def flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "Tuple"):
        return [item for element in value for item in flatten(element)]
    return [value]


def in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(function, *args).result()


# --------------------------------------------------------------------------------------------
# Compiling with tunefarm (spawned process)
# --------------------------------------------------------------------------------------------


def compile_library(
    model_path: str,
    database_url: str,
    out_dir: str,
    trials: int,
    seed: int,
    wanted: dict[str, Any],
) -> dict[str, Any]:
    """``compile_model`` as ``tunefarm compile`` runs it, plus those of ``wanted`` that
    ``CompileOptions`` has; the one place this benchmark compiles."""
    with stopwatch() as imports:
        from tunefarm.tuner.compile_job import CompileOptions, compile_model
        from tunefarm.tuner.job_spec import JobSpec

    fields = {field.name for field in dataclasses.fields(CompileOptions)}
    passed = {name: value for name, value in wanted.items() if name in fields}
    options = CompileOptions(
        model_path=Path(model_path),
        spec=JobSpec.of(TARGET, trials, seed=seed),
        out_dir=Path(out_dir),
        database_url=database_url,
        **passed,
    )
    quiet_meta_schedule()
    with stopwatch() as wall:
        result = compile_model(options)
    manifest = result.manifest
    return {
        "library_path": str(result.library_path),
        "database_url": database_url,
        "options_passed": passed,
        "options_not_in_compile_options": sorted(set(wanted) - fields),
        "import_sec": round(imports["sec"], 3),
        "wall_sec": round(wall["sec"], 3),
        "trials_run": manifest["tuning"]["trials_run"],
        "failed_trials": manifest["tuning"]["failed_trials"],
        # The rest of the manifest as the compile wrote it (its report fields change with the
        # code), less what is per task or per kernel: the task table follows, on its own.
        "manifest": {
            key: value
            for key, value in manifest.items()
            if key not in ("tasks", "pipeline", "coverage_before_tuning", "inputs", "outputs")
        },
        "coverage_before_tuning": {
            key: value
            for key, value in manifest["coverage_before_tuning"].items()
            if key != "tasks"
        },
        "tasks": [
            {
                key: task[key]
                for key in ("name", "weight", "flops", "trials", "best_latency_us", "source")
            }
            for task in manifest["tasks"]
        ],
    }


def where_the_time_goes(
    tasks: list[dict[str, Any]], kernels: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Per task: share of the model's time and GFLOP/s, from the records and as measured.

    From the records: weight x best record over the sum of that for every task with a record
    (a task without one, left to its default schedule, has none). Measured: the task's kernel
    time per run in the library over the time of every call the VM made (kernels and VM
    built-ins alike).
    """
    recorded = {
        task["name"]: task["weight"] * task["best_latency_us"]
        for task in tasks
        if task["best_latency_us"] is not None
    }
    recorded_total = sum(recorded.values())
    measured_total = sum(kernel["us_per_run"] for kernel in kernels.values())
    rows = []
    for task in tasks:
        best = task["best_latency_us"]
        kernel = kernels.get(task["name"])
        measured = kernel["us_per_run"] if kernel else None
        rows.append(
            {
                **task,
                "share_recorded": round(recorded[task["name"]] / recorded_total, 4)
                if task["name"] in recorded and recorded_total
                else None,
                "gflops_recorded": round(task["flops"] / best / 1e3, 2) if best else None,
                "measured_us_per_run": measured,
                "measured_calls": kernel["calls"] if kernel else None,
                "share_measured": round(measured / measured_total, 4)
                if measured is not None and measured_total
                else None,
                "gflops_measured": round(task["flops"] * kernel["calls"] / measured / 1e3, 2)
                if kernel and measured
                else None,
            }
        )
    names = {task["name"] for task in tasks}
    others = {symbol: k for symbol, k in kernels.items() if symbol not in names}
    return {
        "tasks": sorted(rows, key=lambda row: -(row["measured_us_per_run"] or 0.0)),
        "other_calls_us_per_run": round(sum(k["us_per_run"] for k in others.values()), 2),
        "other_calls": others,
        "measured_total_us_per_run": round(measured_total, 2),
    }


def max_abs_difference(ours: list[np.ndarray], reference: list[np.ndarray]) -> float | None:
    if len(ours) != len(reference):
        return None
    return max(
        float(np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max())
        for mine, theirs in zip(ours, reference, strict=True)
    )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def tunefarm_row(
    label: str,
    *,
    model_path: Path,
    feed: dict[str, np.ndarray],
    reference: dict[str, Any],
    trials: int,
    args: argparse.Namespace,
    wanted: dict[str, Any],
    timing: TimingSettings,
) -> dict[str, Any]:
    scratch = args.work / model_path.stem / label
    scratch.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{scratch / 'tuning.db'}"  # fresh: nothing reused between rows
    print(f"  tunefarm {label}: compiling with {trials} trials", file=sys.stderr, flush=True)
    compiled = in_fresh_process(
        compile_library,
        str(model_path),
        database_url,
        str(scratch / "out"),
        trials,
        args.seed,
        wanted,
    )
    for name in compiled["options_not_in_compile_options"]:
        print(f"  (CompileOptions has no {name!r}: not passed)", file=sys.stderr, flush=True)
    print(f"  tunefarm {label}: timing the library", file=sys.stderr, flush=True)
    measured = in_fresh_process(measure_library, compiled["library_path"], feed, timing)
    outputs = measured.pop("outputs")
    kernels = measured.pop("kernels")
    return {
        **measured,
        "ratio_p50_vs_onnxruntime": round(measured["p50_ms"] / reference["p50_ms"], 3),
        "ratio_p99_vs_onnxruntime": round(measured["p99_ms"] / reference["p99_ms"], 3),
        "max_abs_diff_vs_onnxruntime": max_abs_difference(outputs, reference["outputs"]),
        "compile": {key: value for key, value in compiled.items() if key != "tasks"},
        "where_the_time_goes": where_the_time_goes(compiled["tasks"], kernels),
    }


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = dict(versions())
    for name in ("onnxruntime", "onnx", "torch", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def parse_option(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    import cpu_models  # torch: only in this process, not in the spawned ones

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(cpu_models.MODEL_NAMES))
    parser.add_argument("--trials", type=int, default=2000, help="budget of the tuned row")
    parser.add_argument("--skip-tuned", action="store_true", help="no tuned row")
    parser.add_argument("--skip-tunefarm", action="store_true", help="ONNX Runtime only")
    parser.add_argument("--seed", type=int, default=1, help="seed of the search")
    parser.add_argument(
        "--compile-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another CompileOptions field (VALUE as JSON, else a string); repeatable",
    )
    parser.add_argument("--seconds", type=float, default=TimingSettings.seconds)
    parser.add_argument("--min-samples", type=int, default=TimingSettings.min_samples)
    parser.add_argument("--profile-runs", type=int, default=TimingSettings.profile_runs)
    parser.add_argument("--cache", type=Path, default=cpu_models.DEFAULT_CACHE)
    parser.add_argument("--work", type=Path, default=None, help="compiles' scratch folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(cpu_models.MODEL_NAMES))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(cpu_models.MODEL_NAMES)}")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="tunefarm-cpu-peers-"))
    wanted = {**WANTED_OPTIONS, **dict(parse_option(text) for text in args.compile_option)}
    timing = TimingSettings(
        seconds=args.seconds, min_samples=args.min_samples, profile_runs=args.profile_runs
    )

    started_at = datetime.now(timezone.utc)
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu_peers-{machine['hostname']}-{started_at:%Y%m%dT%H%M%SZ}.json"
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "cpu_peers",
        "started_at": started_at.isoformat(),
        "machine": machine,
        "versions": package_versions(),
        "settings": {
            "target": TARGET,
            "trials_tuned": None if args.skip_tuned else args.trials,
            "seed": args.seed,
            "compile_options_wanted": wanted,
            "databases": "a fresh SQLite database per model and row",
            "timing": dataclasses.asdict(timing),
            "timer": "time.perf_counter around single calls, after the warm-up, one spawned "
            "process per timing; p99 is of however many samples the time box allowed",
            "work": str(args.work),
        },
        "models": {},
    }
    for name in names:
        print(f"{name}: exporting (or taking the cached ONNX)", file=sys.stderr, flush=True)
        model_path = cpu_models.onnx_path(name, cache=args.cache)
        _, shape, input_name, description = cpu_models.MODELS[name]
        feed = {input_name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        row: dict[str, Any] = {
            "description": description,
            "onnx": str(model_path),
            "onnx_bytes": model_path.stat().st_size,
            "input": {input_name: list(shape)},
        }
        result["models"][name] = row
        print("  onnxruntime: timing", file=sys.stderr, flush=True)
        reference = in_fresh_process(measure_onnxruntime, str(model_path), feed, timing)
        row["onnxruntime"] = {k: v for k, v in reference.items() if k != "outputs"}
        rows = [] if args.skip_tunefarm else [("trials_0", 0)]
        if not args.skip_tunefarm and not args.skip_tuned:
            rows.append((f"trials_{args.trials}", args.trials))
        for label, trials in rows:
            write(path, result)
            row[label] = tunefarm_row(
                label,
                model_path=model_path,
                feed=feed,
                reference=reference,
                trials=trials,
                args=args,
                wanted=wanted,
                timing=timing,
            )
        write(path, result)
    print_table(result)
    print(f"wrote {path}")
    return 0


def write(path: Path, result: dict[str, Any]) -> None:
    """The result so far: a run of hours keeps its finished rows if it stops."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(path)


def print_table(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(f"{machine['cpu_model']}, {machine['cpu_count']} cores ({machine['hostname']})")
    header = f"{'model':<14} {'row':<12} {'p50 ms':>10} {'p99 ms':>10} {'x ORT p50':>10}"
    print(header + f" {'trials':>7} {'compile s':>10}")
    for name, row in result["models"].items():
        ort = row["onnxruntime"]
        print(f"{name:<14} {'onnxruntime':<12} {ort['p50_ms']:>10.3f} {ort['p99_ms']:>10.3f}")
        for label, run in row.items():
            if not label.startswith("trials_"):
                continue
            print(
                f"{'':<14} {label:<12} {run['p50_ms']:>10.3f} {run['p99_ms']:>10.3f} "
                f"{run['ratio_p50_vs_onnxruntime']:>10.2f} {run['compile']['trials_run']:>7} "
                f"{run['compile']['wall_sec']:>10.1f}"
            )
            tasks = run["where_the_time_goes"]["tasks"][:3]
            for task in tasks:
                print(
                    f"{'':<27} {task['measured_us_per_run'] or 0:>9.0f} us "
                    f"({(task['share_measured'] or 0) * 100:4.1f}%) "
                    f"{task['gflops_measured'] or 0:7.1f} GFLOP/s {task['trials']:>5} trials  "
                    f"{task['name']} [{task['source']}]"
                )


if __name__ == "__main__":
    sys.exit(main())
