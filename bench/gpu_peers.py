"""Our tuned GPU libraries against TVM untuned and PyTorch, side by side in one process.

For each model and precision, on one GPU, with one timer for everything (CUDA events around
each call, after a warm-up): torch eager, torch.compile (default and reduce-overhead, and
max-autotune with --max-autotune), TVM with its default schedules, and TVM with the best records
of a tunefarm database. Results go to ``bench/results/gpu_peers-<host>-<UTC time>.json``.

    python3 bench/gpu_peers.py --models resnet50 --precisions fp32,fp16 \\
        --records path/to/records [--tune-log path/to/gpu_tune_log.json ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_models


def time_calls(run: Callable[[], Any], *, samples: int, warmup: int) -> dict[str, float]:
    """p50/p90/p99 in ms of single calls, each bracketed by CUDA events on the default stream."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    values = np.array(times)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p90_ms": round(float(np.percentile(values, 90)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "samples": samples,
        **back_to_back(run, calls=BACK_TO_BACK_CALLS),
        **gpu_busy(run, calls=PROFILED_CALLS),
    }


BACK_TO_BACK_CALLS = 500
PROFILED_CALLS = 50


def back_to_back(run: Callable[[], Any], *, calls: int) -> dict[str, float]:
    """Mean ms per call over ``calls`` calls queued back to back, one event pair around all.

    Per-call timing waits for each call; here the host queues the next call while the GPU
    runs the last, which is what serving a stream of requests sees (torch's reduce-overhead
    mode looks twice as fast this way)."""
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        run()
    end.record()
    end.synchronize()
    return {"mean_back_to_back_ms": round(start.elapsed_time(end) / calls, 4)}


def gpu_busy(run: Callable[[], Any], *, calls: int) -> dict[str, float]:
    """GPU time per call summed over its kernels (CUPTI, through torch.profiler)."""
    from gpu_fidelity import kernel_times

    kernels = kernel_times(run, calls)
    return {
        "gpu_busy_us": round(sum(row["us_per_call"] for row in kernels.values()), 1),
        "kernels_per_call": round(sum(row["launches"] for row in kernels.values()) / calls, 1),
    }


def torch_peers(
    model: gpu_models.BenchModel, *, half: bool, modes: list[str], samples: int
) -> tuple[dict[str, Any], np.ndarray]:
    module, inputs = model.on("cuda", half=half)
    results: dict[str, Any] = {}
    with torch.no_grad():
        reference = module(*inputs).float().cpu().numpy()
        results["torch eager"] = time_calls(lambda: module(*inputs), samples=samples, warmup=20)
        for mode in modes:
            torch._dynamo.reset()
            started = time.perf_counter()
            compiled = torch.compile(module, mode=None if mode == "default" else mode)
            for _ in range(3):  # compile, then record CUDA graphs where the mode uses them
                compiled(*inputs)
            torch.cuda.synchronize()
            compile_sec = time.perf_counter() - started
            row = time_calls(partial(compiled, *inputs), samples=samples, warmup=20)
            row["compile_sec"] = round(compile_sec, 1)
            results[f"torch.compile {mode}"] = row
    torch._dynamo.reset()
    return results, reference


def tvm_peers(
    model: gpu_models.BenchModel,
    onnx_path: Path,
    *,
    half: bool,
    database_url: str | None,
    reference: np.ndarray,
    samples: int,
    results: dict[str, Any],
    save: Callable[[], None] = lambda: None,
    vendor: bool = False,
    tf32: bool = False,
    untuned: bool = True,
    vendor_only: bool = False,
) -> None:
    """TVM's rows, written into ``results`` one by one; ``save`` after each, so that a run cut
    off by its time limit keeps the rows it finished."""
    import tvm

    from tunefarm.tuner import build
    from tunefarm.tuner.coverage_plan import plan_coverage
    from tunefarm.tuner.latency import LoadedModel
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuner.tasks import extract_tuning_tasks, look_up_tasks
    from tunefarm.tuning_db import SqlDatabase

    target = parse_target("cuda")
    device = tvm.cuda(0)
    validated = validate_onnx_model(onnx_path, max_bytes=4 * 1024**3)
    started = time.perf_counter()
    pipeline = run_pipeline(
        import_onnx(validated), target=target, options=PipelineOptions(fp16=half)
    )
    results["pipeline_sec"] = round(time.perf_counter() - started, 1)
    tasks = extract_tuning_tasks(pipeline.mod, target=target)
    args = [tvm.runtime.tensor(t.numpy(), device=device) for t in model.inputs]

    def measure(label: str, executable: Any, compile_sec: float) -> None:
        loaded = LoadedModel(executable, target=target)
        output = loaded.run([tensor.numpy() for tensor in model.inputs])[0]
        diff = float(np.abs(output.astype(np.float32) - reference).max())
        main = loaded.vm["main"]
        row = time_calls(lambda: main(*args), samples=samples, warmup=20)
        row.update(compile_sec=round(compile_sec, 1), max_abs_diff_vs_torch=diff)
        results[label] = row
        save()
        print(f"    {label}: p50 {row['p50_ms']} ms (diff {diff:.2e})", flush=True)

    if untuned:
        started = time.perf_counter()
        executable = build.compile_untuned(pipeline.mod, target=target, cuda_graph=True)
        measure("TVM untuned + CUDA graph", executable, time.perf_counter() - started)
    if vendor:
        # ``vendor_only``: beside the records' row, every chain on the vendor (no records), so
        # the two compare in one run.
        rows = [(database_url, "")]
        if vendor_only and database_url is not None:
            rows.append((None, " (no records)"))
        for with_tf32 in (False, True) if tf32 and not half else (False,):
            for url, key in rows:
                vendor_rows(
                    model,
                    onnx_path,
                    half=half,
                    database_url=url,
                    measure=measure,
                    into=results,
                    tf32=with_tf32,
                    key=key,
                )
    if database_url is not None:
        database = SqlDatabase(database_url, target=target)
        look_up_tasks(tasks, database=database, target=target)
        plan = plan_coverage(tasks, database=database, trials=0)
        results["coverage"] = {
            key: value for key, value in plan.as_dict().items() if key != "tasks"
        }
        results["trials_in_database"] = trial_counts(database, tasks)
        for graph in (True, False):
            started = time.perf_counter()
            executable = build.compile_tuned(
                pipeline.mod, target=target, database=database, cuda_graph=graph
            )
            measure(
                f"tunefarm tuned{' + CUDA graph' if graph else ''}",
                executable,
                time.perf_counter() - started,
            )
        results["tasks"] = [
            {
                "name": task.name,
                "weight": task.weight,
                "flops": task.flops,
                "best_us": round(task.best_sec_before * 1e6, 3) if task.best_sec_before else None,
                "trials": results["trials_in_database"]["per_task"].get(task.name, 0),
            }
            for task in tasks
        ]
        save()


def vendor_rows(
    model: gpu_models.BenchModel,
    onnx_path: Path,
    *,
    half: bool,
    database_url: str | None,
    measure: Callable[[str, Any, float], None],
    into: dict[str, Any],
    tf32: bool = False,
    key: str = "",
) -> None:
    """Convolutions and matmuls on cuDNN and cuBLASLt (``--vendor-kernels``) where that is
    faster than the database's tuned kernel (``tuner.vendor_choice``), the rest TVM's. The
    library is exported and loaded, as a user gets it: the vendor calls live in the .so.
    ``tf32``: fp32 vendor calls on TF32 tensor cores (``--tf32``), the rows' labels say so.
    The calls and choices go into ``into`` before the library is built and timed; ``key``
    tells this row's entries from another vendor row's."""
    import tvm

    from tunefarm.tuner import build, vendor_choice, vendor_kernels
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuning_db import SqlDatabase

    target = parse_target("cuda")
    validated = validate_onnx_model(onnx_path, max_bytes=4 * 1024**3)
    choices: list[vendor_choice.ChainChoice] = []
    select = (
        vendor_choice.selector(target=target, database_url=database_url, into=choices)
        if database_url is not None
        else None
    )
    pipeline = run_pipeline(
        import_onnx(validated),
        target=target,
        options=PipelineOptions(fp16=half, vendor_kernels=True, vendor_select=select, tf32=tf32),
    )
    suffix = (" + TF32" if tf32 else "") + key
    into[f"vendor_calls{suffix}"] = dict(vendor_kernels.vendor_calls(pipeline.mod))
    into[f"vendor_choices{suffix}"] = [choice.as_dict() for choice in choices]
    print(f"    vendor calls: {into[f'vendor_calls{suffix}']}", flush=True)
    toolchain = vendor_kernels.find_toolchain()
    vendor_kernels.register_in_process(toolchain)
    started = time.perf_counter()
    if database_url is not None:
        database = SqlDatabase(database_url, target=target)
        executable = build.compile_tuned(
            pipeline.mod, target=target, database=database, cuda_graph=True
        )
        label = "tunefarm tuned + vendor kernels + CUDA graph"
    else:
        executable = build.compile_untuned(pipeline.mod, target=target, cuda_graph=True)
        label = "TVM untuned + vendor kernels + CUDA graph"
    precision = "fp16" if half else "tf32" if tf32 else "fp32"
    # A name of its own per row: loading a path already loaded gives the first library again.
    variant = "-no-records" if key else ""
    library = onnx_path.with_suffix(f".{precision}.vendor{variant}.so")
    build.export_library(executable, library, vendor=toolchain)
    measure(label + suffix, tvm.runtime.load_module(str(library)), time.perf_counter() - started)


def trial_counts(database: Any, tasks: list[Any]) -> dict[str, Any]:
    """Records (one per measured trial, failures included) of each task in the database."""
    from sqlalchemy import func, select

    from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow

    per_task = {}
    with database.engine.connect() as connection:
        for task in tasks:
            key = database.workload_key(task.mod)
            per_task[task.name] = connection.execute(
                select(func.count(TuningRecordRow.id))
                .join(WorkloadRow, WorkloadRow.id == TuningRecordRow.workload_id)
                .where(WorkloadRow.key == key)
                .where(TuningRecordRow.target_key == database.target_fingerprint.key)
            ).scalar_one()
    return {"total": sum(per_task.values()), "per_task": per_task}


def gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return torch.cuda.get_device_name(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(gpu_models.MODEL_NAMES))
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--records", type=Path, default=None, help="exported records to load")
    parser.add_argument("--db", default=None, help="a tuning database URL to read instead")
    parser.add_argument("--tune-log", type=Path, action="append", default=[])
    parser.add_argument("--max-autotune", action="store_true")
    parser.add_argument("--skip-torch-compile", action="store_true")
    parser.add_argument(
        "--skip-untuned", action="store_true", help="no TVM untuned row (a minute of compiling)"
    )
    parser.add_argument(
        "--vendor-only-row",
        action="store_true",
        help="with --vendor-kernels and records: also a row with every chain on the vendor",
    )
    parser.add_argument(
        "--vendor-kernels", action="store_true", help="add the cuDNN/cuBLASLt row (issue 17)"
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="fp32: add vendor rows with TF32 tensor cores (torch's cuDNN default)",
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-peers"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    started = datetime.now(timezone.utc)
    args.work.mkdir(parents=True, exist_ok=True)
    database_url = args.db
    if args.records is not None:
        from tunefarm.tuning_db.json_logs import import_json_logs

        database_url = f"sqlite:///{args.work / f'peers-{started:%H%M%S}.db'}"
        counts = import_json_logs(database_url, args.records)
        print(f"loaded {counts.records} records of {counts.workloads} workloads", flush=True)
    modes = [] if args.skip_torch_compile else ["default", "reduce-overhead"]
    if args.max_autotune:
        modes.append("max-autotune")

    import tvm

    result: dict[str, Any] = {
        "benchmark": "gpu_peers",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": {
            "hostname": socket.gethostname(),
            "gpu": gpu_name(),
            "cpu_count": __import__("os").cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {"torch": torch.__version__, "tvm": tvm.__version__},
        # What torch's rows ran with: its cuDNN convolutions use TF32 for fp32 by default.
        "torch_tf32": {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        "timer": "CUDA events around each call on the default stream, after 20 warm-up calls; "
        f"mean_back_to_back_ms: one event pair around {BACK_TO_BACK_CALLS} queued calls; "
        f"gpu_busy_us: CUPTI kernel time per call over {PROFILED_CALLS} calls",
        "tuning": [json.loads(path.read_text()) for path in args.tune_log if path.is_file()],
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_peers-{socket.gethostname()}-{started:%Y%m%dT%H%M%SZ}.json"

    def save() -> None:  # after every row: a run cut off keeps what it measured
        path.write_text(json.dumps(result, indent=1) + "\n")

    for name in args.models.split(","):
        model = gpu_models.build(name)
        onnx_path = gpu_models.export_onnx(model, args.work / f"{name}.onnx")
        for precision in args.precisions.split(","):
            half = precision == "fp16"
            print(f"{name} {precision}", flush=True)
            row, reference = torch_peers(model, half=half, modes=modes, samples=args.samples)
            result["models"][f"{name} {precision}"] = row
            save()
            tvm_peers(
                model,
                onnx_path,
                half=half,
                database_url=database_url,
                reference=reference,
                samples=args.samples,
                results=row,
                save=save,
                vendor=args.vendor_kernels,
                tf32=args.tf32,
                untuned=not args.skip_untuned,
                vendor_only=args.vendor_only_row,
            )
            print(json.dumps({k: v for k, v in row.items() if k != "tasks"}), flush=True)
    save()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
