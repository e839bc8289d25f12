"""Recorded vs in-model GPU kernel times, and the warm paths, in one process on one GPU (issue 16).

1. Warm paths: ``records import`` of a pack into a fresh SQLite database, ``plan``, and a
   0-trial ``compile_model`` (no baseline), each timed, the compile per stage.
2. In the model: every kernel's GPU time per call from CUPTI (torch.profiler), over
   back-to-back calls of the library, with and without its CUDA graph; and TVM's VM profiler
   on the build without a graph (what the manifest's breakdown reads).
3. For the heaviest tasks: the database's best record rebuilt and timed on this GPU under each
   measure mode (``MeasureSettings``), with the evaluator's number and CUPTI's kernel time.

    python3 bench/gpu_fidelity.py --pack packs/resnet50-fp16-sm_90 --model resnet50 --fp16 \\
        --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

L2_FLUSH_BYTES = 256 * 1024**2


def measure_modes() -> dict[str, Any]:
    from tunefarm.tuner.trial import GPU_MEASURE, MeasureSettings

    return {
        # How GPU candidates were timed before issue 16: ~hundreds of calls back to back, so
        # every call after the first finds its weights in L2.
        "before: warm (number=3, min_repeat_ms=20)": MeasureSettings(),
        # The runner now: one call per repeat after a flush of twice the L2, less the floor.
        "after: cold L2, launch floor subtracted": GPU_MEASURE,
    }


def kernel_times(run: Any, calls: int) -> dict[str, dict[str, float]]:
    """GPU time per call of each kernel (CUPTI) over ``calls`` calls of ``run``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type.name == "CUDA":
            totals[event.name].append(float(event.time_range.elapsed_us()))
    return {
        name: {
            "us_per_call": round(sum(times) / calls, 3),
            "launches": len(times),
            "us_median": round(statistics.median(times), 3),
        }
        for name, times in totals.items()
    }


def task_of(kernel: str) -> str:
    return re.sub(r"_kernel(_?\d+)?$", "", kernel)


def by_task(kernels: dict[str, dict[str, float]]) -> dict[str, float]:
    tasks: dict[str, float] = defaultdict(float)
    for name, row in kernels.items():
        tasks[task_of(name)] += row["us_per_call"]
    return dict(tasks)


def nvidia_smi(query: str) -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        return f"unavailable: {err}"


class StageClock:
    """A compile observer that notes when each stage message came."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stages: list[tuple[float, str]] = []

    def stage(self, phase: str, message: str) -> None:
        self.stages.append((round(time.perf_counter() - self.started, 2), f"{phase}: {message}"))

    def planned(self, plan: Any) -> None:
        self.stage("planned", plan.summary())

    def tuning_started(self, total_trials: int, tasks: Any) -> None: ...

    def tuning_progress(self, report: Any) -> None: ...

    def tuning_finished(self) -> None: ...


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--top", type=int, default=10, help="the heaviest tasks to re-measure")
    parser.add_argument("--calls", type=int, default=50, help="model calls under the profiler")
    parser.add_argument(
        "--skip-warm-paths",
        action="store_true",
        help="import the pack in this process; no plan and no compile",
    )
    parser.add_argument(
        "--nvrtc-variants",
        default="default:",
        help="0-trial compiles in a row, each 'name:TVM_CUDA_NVRTC_EXTRA_OPTS', ';'-separated",
    )
    parser.add_argument("--only-warm-paths", action="store_true", help="stop after the warm paths")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-fidelity"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    started_utc = datetime.now(timezone.utc)
    args.work.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{args.work / f'fidelity-{started_utc:%H%M%S}.db'}"
    result: dict[str, Any] = {
        "benchmark": "gpu_fidelity",
        "started_utc": started_utc.isoformat(timespec="seconds"),
        "machine": {
            "hostname": socket.gethostname(),
            "gpu": nvidia_smi("name,driver_version,clocks.max.sm,clocks.max.mem"),
            "cpu_count": os.cpu_count(),
        },
        "settings": vars(args) | {"pack": str(args.pack), "work": str(args.work)},
    }
    out_file = args.out / f"gpu_fidelity-{socket.gethostname()}-{started_utc:%Y%m%dT%H%M%SZ}.json"

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(result, indent=1, default=str) + "\n")

    import gpu_models

    onnx_path = gpu_models.export_onnx(
        gpu_models.build(args.model), args.work / "models" / f"{args.model}.onnx"
    )

    # 1. Warm paths, each in a fresh process as a user runs them.
    if args.skip_warm_paths:
        from tunefarm.tuning_db.json_logs import import_json_logs

        import_json_logs(database_url, args.pack)
    else:
        cli = [sys.executable, "-m", "tunefarm"]
        warm: dict[str, Any] = {}
        for label, command in (
            ("records import", [*cli, "records", "import", str(args.pack), "--db", database_url]),
            (
                "plan",
                [*cli, "plan", str(onnx_path), "--target", "cuda", "--db", database_url, "--json"]
                + (["--fp16"] if args.fp16 else []),
            ),
        ):
            begun = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            warm[label] = {
                "wall_sec": round(time.perf_counter() - begun, 2),
                "rc": done.returncode,
                "tail": (done.stdout + done.stderr)[-600:],
            }
            print(f"{label}: {warm[label]['wall_sec']} s (rc {done.returncode})", flush=True)
        result["warm_paths"] = warm
        save()

        from tunefarm.tuner.compile_job import CompileOptions, compile_model
        from tunefarm.tuner.job_spec import JobSpec

        # NVRTC reads TVM_CUDA_NVRTC_EXTRA_OPTS at every compile, so one process can compare
        # options; the latencies show whether the kernels changed.
        for variant in filter(None, args.nvrtc_variants.split(";")):
            name, _, nvrtc_opts = variant.partition(":")
            os.environ["TVM_CUDA_NVRTC_EXTRA_OPTS"] = nvrtc_opts
            clock = StageClock()
            begun = time.perf_counter()
            compiled = compile_model(
                CompileOptions(
                    model_path=onnx_path,
                    spec=JobSpec.of("cuda", 0, fp16=args.fp16, baseline=False),
                    out_dir=args.work / f"out-{name}",
                    database_url=database_url,
                    max_model_bytes=4 * 1024**3,
                ),
                observer=clock,  # type: ignore[arg-type]
            )
            label = "compile, 0 trials, no baseline" + ("" if name == "default" else f" ({name})")
            warm[label] = {
                "nvrtc_extra_opts": nvrtc_opts,
                "wall_sec": round(time.perf_counter() - begun, 2),
                "stages": clock.stages,
                "manifest_timings": compiled.manifest.get("timings"),
                "latency": compiled.manifest.get("latency"),
                "in_model_kernels_us": (compiled.manifest.get("in_model") or {}).get(
                    "kernels_us_per_run"
                ),
            }
            print(f"{label}: {warm[label]['wall_sec']} s", flush=True)
            save()
        os.environ.pop("TVM_CUDA_NVRTC_EXTRA_OPTS", None)
    if args.only_warm_paths:
        return 0

    # 2. In the model.
    import numpy as np
    import torch
    import tvm
    from tvm import relax

    from tunefarm.tuner import build
    from tunefarm.tuner.kernel_profile import profile_kernels
    from tunefarm.tuner.record_verification import trial_request_for_record
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuner.tasks import look_up_tasks
    from tunefarm.tuner.trial import run_trial
    from tunefarm.tuning_db import SqlDatabase

    target = parse_target("cuda")
    device = tvm.cuda(0)
    database = SqlDatabase(database_url, target=target)
    from tunefarm.tuner.model_analysis import analyse_model

    analysed = analyse_model(onnx_path, target=target, layout="auto", fp16=args.fp16)
    tasks = analysed.tasks
    look_up_tasks(tasks, database=database, target=target)
    model = gpu_models.build(args.model)
    inputs = [tvm.runtime.tensor(t.numpy(), device=device) for t in model.inputs]
    in_model: dict[str, Any] = {}
    for graph in (False, True):
        begun = time.perf_counter()
        executable = build.compile_tuned(
            analysed.pipeline.mod, target=target, database=database, cuda_graph=graph
        )
        build_sec = time.perf_counter() - begun
        vm = relax.VirtualMachine(executable, device)
        main_fn = vm["main"]
        for _ in range(20):
            main_fn(*inputs)
        device.sync()
        kernels = kernel_times(lambda main_fn=main_fn: main_fn(*inputs), args.calls)
        in_model["graph" if graph else "no graph"] = {
            "build_sec": round(build_sec, 2),
            "gpu_busy_us_per_call": round(sum(k["us_per_call"] for k in kernels.values()), 2),
            "kernels": kernels,
        }
        if not graph:
            # What the manifest's breakdown reads: each kernel timed in place by the VM's
            # instrument (tuner.kernel_profile), to check against CUPTI.
            profile = profile_kernels(executable, target, device, inputs, runs=5)
            in_model["instrument, no graph"] = {
                "launch_floor_us": round(profile.launch_floor_us, 3),
                "total_us": round(profile.total_us, 2),
                "kernels": {
                    k.name: {"calls": k.calls, "us_per_run": round(k.us_per_run, 3)}
                    for k in profile.kernels
                },
            }
    result["in_model"] = in_model
    save()

    # 3. The heaviest tasks' best records, re-measured under each mode.
    model_us = by_task(in_model["graph"]["kernels"])
    weighted = sorted(
        (task for task in tasks if task.best_sec_before is not None),
        key=lambda task: -task.weight * (task.best_sec_before or 0.0),
    )[: args.top]
    rows = []
    for task in weighted:
        record = database.query_tuning_record(task.mod, target, task.name)
        row: dict[str, Any] = {
            "task": task.name,
            "weight": task.weight,
            "recorded_us": round((task.best_sec_before or 0.0) * 1e6, 3),
            "in_model_us_per_call": round(model_us.get(task.name, float("nan")) / task.weight, 3)
            if task.name in model_us
            else None,
            "modes": {},
        }
        for label, settings in measure_modes().items():
            request = trial_request_for_record(record, target, settings)
            if request is None:
                row["modes"][label] = {"error": "trace does not apply"}
                continue
            captured: dict[str, Any] = {}

            def measure(request: Any = request, captured: dict[str, Any] = captured) -> None:
                captured["result"] = run_trial(request)

            kernels = kernel_times(measure, 1)
            trial = captured["result"]
            # The flush is a device-to-device copy; the candidate is the only kernel.
            cupti = [k for name, k in kernels.items() if not name.startswith(("Memcpy", "Memset"))]
            launches = sum(k["launches"] for k in cupti)
            kernel_us = sum(k["us_per_call"] for k in cupti) / max(1, launches)
            row["modes"][label] = {
                "evaluator_us": round(float(np.mean(trial.run_secs)) * 1e6, 3)
                if trial.run_secs
                else None,
                "error": trial.error,
                "cupti_kernel_us": round(kernel_us, 3),
                "cupti_launches": launches,
                "settings": asdict(settings),
            }
        rows.append(row)
        modes = "; ".join(
            f"{label}: eval {m.get('evaluator_us')} cupti {m.get('cupti_kernel_us')}"
            f"{' ' + str(m['error'])[:120] if m.get('error') else ''}"
            for label, m in row["modes"].items()
        )
        print(
            f"{task.name} x{task.weight}: recorded {row['recorded_us']} in-model "
            f"{row['in_model_us_per_call']} | {modes}",
            flush=True,
        )
        result["tasks"] = rows
        save()
    from tunefarm.tuner import launch_floor

    result["evaluator_floors_us"] = {
        str(key): round(value * 1e6, 3) for key, value in launch_floor._floors.items()
    }
    result["gpu_clocks_after"] = nvidia_smi("clocks.sm,clocks.mem,temperature.gpu,power.draw")
    torch.cuda.synchronize()
    save()
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
