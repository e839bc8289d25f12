"""Tune the GPU benchmark models through the farm, in time-boxed device calls that add up.

One call: start a measure worker for the GPU (a warm pool of build processes) and a coordinator
on a local Redis; load the records earlier calls brought back; submit one farm job per model and
precision; cancel each job when its time is up (its records stay); write every record back out,
so that the next call goes on where this one stopped.

    python3 bench/gpu_tune.py --models resnet50 --precisions fp16 --seconds 420 \\
        --records-in prev/records --records-out $OUT/records

``--variants`` runs the same jobs once per farm layout, side by side in one call, each on a
fresh database with workers of its own (issue 16's trials/s ideas):

    --variants "base:concurrency=15;b64:concurrency=15,batch=64;
                pinned:concurrency=12,coordinator_cores=4,batch=64"

Keys: ``concurrency`` (build processes of the measure worker), ``batch`` and ``in_flight``
(``TUNEFARM_SEARCH_BATCH`` and ``TUNEFARM_SEARCH_IN_FLIGHT``), ``coordinator_cores`` (the
coordinator pinned to the last N cores, the measure worker to the others), ``split_k`` (0 or
1: ``TUNEFARM_SEARCH_SPLIT_K``, the split-K sketches of ``tuner/split_k.py``, on by default).

With several variants, each variant after the first writes its records beside
``--records-out`` (``<records-out>-<variant>``), and ``task_compare`` in the result file gives
each task's best time under every variant against the first; split-K on whole models:

    --variants "nosplit:concurrency=15,split_k=0;splitk:concurrency=15"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_models
from local_tuning import machine_info


@dataclass(frozen=True)
class Variant:
    """One farm layout: how many build processes, the search's batches, which cores."""

    name: str
    concurrency: int
    batch: int | None = None
    in_flight: int | None = None
    coordinator_cores: int | None = None
    split_k: int | None = None

    def cores(self) -> tuple[set[int] | None, set[int] | None]:
        """CPUs of the measure worker and of the coordinator (None: not pinned)."""
        if not self.coordinator_cores:
            return None, None
        every = sorted(os.sched_getaffinity(0))
        split = len(every) - self.coordinator_cores
        return set(every[:split]), set(every[split:])


def parse_variants(text: str, default_concurrency: int) -> list[Variant]:
    variants = []
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        name, _, spec = part.partition(":")
        fields: dict[str, int] = {}
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            fields[key.strip()] = int(value)
        fields.setdefault("concurrency", default_concurrency)
        variants.append(Variant(name=name.strip(), **fields))
    return variants


def start_worker(
    args: list[str], log: Path, env: dict[str, str], cpus: set[int] | None = None
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tunefarm", "worker", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    deadline = time.monotonic() + 180
    while " ready." not in log.read_text() and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker {args} exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def tune_one(
    engine: Any, model_path: Path, *, fp16: bool, trials: int, seconds: float, out: Path
) -> dict[str, Any]:
    from tunefarm.cli.farm_client import submit_compile
    from tunefarm.tuner.compile_job import CompileOptions
    from tunefarm.tuner.job_spec import JobSpec
    from tunefarm.tuning_db import job_store
    from tunefarm.tuning_db.job_state import JobState

    options = CompileOptions(
        model_path=model_path,
        spec=JobSpec.of("cuda", trials, fp16=fp16),
        out_dir=out,
        database_url=os.environ["TUNEFARM_DATABASE_URL"],
        max_model_bytes=4 * 1024**3,
    )
    started = time.monotonic()
    job_id = submit_compile(options, engine=engine)
    cancelled_at = None
    first_trial_at = None
    first_trials = 0
    trials_at_cancel = 0
    tuning_started_at = None
    last_print = 0.0
    while True:
        job = job_store.get_job(engine, job_id)
        assert job is not None
        now = time.monotonic()
        if tuning_started_at is None and job.state is JobState.TUNING:
            tuning_started_at = now
        seen = job.progress.trials
        if first_trial_at is None and seen > 0:
            first_trial_at, first_trials = now, seen
        if cancelled_at is None:
            trials_at_cancel = seen
        if now - last_print > 30:
            last_print = now
            done = sum(task.trials for task in job.progress.tasks.values())
            print(f"  [{now - started:5.0f}s] {job.state}: {done} trials", flush=True)
        if job.finished:
            break
        if cancelled_at is None and now - started > seconds:
            job_store.request_cancel(engine, job_id)
            cancelled_at = now
        time.sleep(1.0)
    tasks = job.progress.tasks
    trials = sum(task.trials for task in tasks.values())
    tuning_end = cancelled_at or time.monotonic()
    return {
        "job": job_id,
        "first_trial_back_sec": _since(started, first_trial_at),
        "tuning_state_sec": _since(started, tuning_started_at),
        "trials_per_sec": round(trials / max(1e-9, tuning_end - started), 3),
        # Results come back a whole batch at a time, so the first count seen is a batch: the
        # steady rate counts only what came after it, up to the cancel.
        "trials_per_sec_after_first": round(
            (trials_at_cancel - first_trials) / (tuning_end - first_trial_at), 3
        )
        if first_trial_at is not None and tuning_end - first_trial_at > 5
        else None,
        "trials_at_first": first_trials,
        "trials_at_cancel": trials_at_cancel,
        "time_split": job.progress.time_split,
        "tasks_without_trials": sum(1 for task in tasks.values() if not task.trials),
        "state": job.state,
        "error": job.error,
        "wall_sec": round(time.monotonic() - started, 1),
        "cancelled_after_sec": round(cancelled_at - started, 1) if cancelled_at else None,
        "trials": sum(task.trials for task in tasks.values()),
        "tasks": {
            name: {"trials": task.trials, "best_us": task.best_us} for name, task in tasks.items()
        },
        "manifest": job.manifest,
    }


def task_compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each task's best time under every variant, and its ratio to the first variant's."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    first: dict[tuple[str, str], str] = {}
    for run in runs:
        variant = run["variant"]["name"]
        first.setdefault((run["model"], run["precision"]), variant)
        for task, figures in run["tasks"].items():
            key = (run["model"], run["precision"], task)
            row = rows.setdefault(
                key,
                {"model": key[0], "precision": key[1], "task": task, "best_us": {}, "ratio": {}},
            )
            row["best_us"][variant] = figures["best_us"]
    for (model, precision, _), row in rows.items():
        base = row["best_us"].get(first[(model, precision)])
        for variant, best in row["best_us"].items():
            if base and best:
                row["ratio"][variant] = round(best / base, 3)
    return list(rows.values())


def busy_shares(run: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """Per trial seconds and how busy the build pool and the GPU's timer were over the window."""
    workers = (run.get("time_split") or {}).get("workers") or {}
    trials = int(workers.get("trials") or 0)
    window = run.get("cancelled_after_sec") or run.get("wall_sec") or 0.0
    if not trials or not window:
        return {}
    held = sum(float(workers.get(key, 0.0)) for key in ("build_sec", "run_sec", "device_wait_sec"))
    return {
        "per_trial_sec": {
            key.removesuffix("_sec"): round(float(workers.get(key, 0.0)) / trials, 3)
            for key in ("queue_sec", "build_sec", "run_sec", "device_wait_sec", "device_sec")
        },
        "build_pool_busy_share": round(held / (window * concurrency), 3),
        "gpu_timer_busy_share": round(float(workers.get("device_sec", 0.0)) / window, 3),
    }


def run_stock(model_path: Path, *, fp16: bool, trials: int, work: Path) -> dict[str, Any]:
    """Stock ``tune_relax`` (LocalBuilder with a 120 s timeout, LocalRunner) on the same tasks."""
    import local_tuning as common
    import tvm.s_tir.meta_schedule as ms

    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target

    target = parse_target("cuda")
    validated = validate_onnx_model(model_path, max_bytes=4 * 1024**3)
    mod = run_pipeline(
        import_onnx(validated), target=target, options=PipelineOptions(fp16=fp16)
    ).mod
    started = time.monotonic()
    row = common.run_stock(
        mod,
        target,
        trials=trials,
        per_task=trials,
        trials_per_iter=64,
        seed=1,
        order=common.stock_task_order(mod, target),
        work_dir=work,
        builder=ms.builder.LocalBuilder(timeout_sec=120),
    )
    row["wall_sec_with_task_extraction"] = round(time.monotonic() - started, 1)
    return row


def _stop(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _since(start: float, moment: float | None) -> float | None:
    """Seconds from ``start`` to ``moment`` (polled once a second), if it came."""
    return round(moment - start, 1) if moment is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--precisions", default="fp16", help="fp32, fp16 or both (comma list)")
    parser.add_argument("--seconds", type=float, default=420, help="tuning time per job")
    parser.add_argument("--trials", type=int, default=20000, help="budget per job (upper bound)")
    parser.add_argument("--concurrency", type=int, default=(os.cpu_count() or 2) - 1)
    parser.add_argument("--records-in", type=Path, default=None)
    parser.add_argument("--records-out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-tune"))
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument(
        "--stock-trials",
        type=int,
        default=0,
        help="after the farm runs, stock tune_relax on the first model for this many trials",
    )
    parser.add_argument(
        "--variants",
        default="",
        help='farm layouts to compare, "name:key=value,...;..." (see the module doc)',
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the log here")
    parser.add_argument("--tag", default="gpu", help="the machine's short name in the file name")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    import redis

    from tunefarm.tuning_db.json_logs import export_json_logs, import_json_logs
    from tunefarm.tuning_db.sql_database import open_engine

    try:  # before a minute of model export: the farm cannot start without its broker
        redis.Redis.from_url(args.broker_url).ping()
    except redis.RedisError as err:
        print(
            f"gpu_tune needs a Redis at {args.broker_url} ({err}); on the device, "
            "`bash .devkit/setup.sh --redis` starts one",
            file=sys.stderr,
        )
        return 2
    variants = parse_variants(args.variants, args.concurrency) or [
        Variant(name="default", concurrency=args.concurrency)
    ]
    log: dict[str, Any] = {
        "benchmark": "gpu_tune",
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "lscpu": _lscpu(),
        "gpu": _gpu_name(),
        "runs": [],
    }
    models: dict[str, Path] = {}
    for name in args.models.split(","):
        models[name] = gpu_models.export_onnx(
            gpu_models.build(name), args.work / "models" / f"{name}.onnx"
        )
    try:
        for variant in variants:
            # A fresh database per variant: no variant starts from another's records.
            work = args.work / variant.name if len(variants) > 1 else args.work
            work.mkdir(parents=True, exist_ok=True)
            database_url = f"sqlite:///{work / 'tuning.db'}"
            env = {
                **os.environ,
                "TUNEFARM_DATABASE_URL": database_url,
                "TUNEFARM_BROKER_URL": args.broker_url,
            }
            os.environ.update(env)
            redis.Redis.from_url(args.broker_url).flushdb()
            engine = open_engine(database_url)
            if args.records_in is not None and args.records_in.is_dir():
                counts = import_json_logs(engine, args.records_in)
                print(f"imported {counts.records} records of {counts.workloads} workloads")
            measure_cpus, coordinator_cpus = variant.cores()
            coordinator_env = dict(env)
            if variant.batch is not None:
                coordinator_env["TUNEFARM_SEARCH_BATCH"] = str(variant.batch)
            if variant.in_flight is not None:
                coordinator_env["TUNEFARM_SEARCH_IN_FLIGHT"] = str(variant.in_flight)
            if variant.split_k is not None:
                coordinator_env["TUNEFARM_SEARCH_SPLIT_K"] = str(variant.split_k)
            print(f"variant {variant}", flush=True)
            workers = [
                start_worker(
                    ["--target", "cuda", "--concurrency", str(variant.concurrency)],
                    work / "measure.log",
                    env,
                    measure_cpus,
                ),
                start_worker(
                    ["--jobs"], work / "coordinator.log", coordinator_env, coordinator_cpus
                ),
            ]
            try:
                for name, model_path in models.items():
                    for precision in args.precisions.split(","):
                        print(f"tuning {name} {precision} for {args.seconds:.0f} s", flush=True)
                        run = tune_one(
                            engine,
                            model_path,
                            fp16=precision == "fp16",
                            trials=args.trials,
                            seconds=args.seconds,
                            out=work / "out" / f"{name}-{precision}",
                        )
                        run.update(model=name, precision=precision, variant=asdict(variant))
                        run.update(busy_shares(run, variant.concurrency))
                        if len(variants) > 1:
                            run.pop("manifest", None)  # the layouts' comparison needs no library
                        log["runs"].append(run)
                        print(
                            f"  {run['state']} after {run['wall_sec']} s with {run['trials']} "
                            f"trials; {run['trials_per_sec_after_first']} trials/s after the "
                            f"first, first back at {run['first_trial_back_sec']} s",
                            flush=True,
                        )
            finally:
                _stop(workers)
            records_out = args.records_out
            if variant is not variants[0]:
                records_out = records_out.with_name(f"{records_out.name}-{variant.name}")
            counts = export_json_logs(engine, records_out)
            print(f"exported {counts.records} records of {counts.workloads} workloads")
        if len(variants) > 1:
            log["task_compare"] = task_compare(log["runs"])
            for row in log["task_compare"]:
                print(
                    f"  {row['model']} {row['precision']} {row['task']}: "
                    + ", ".join(f"{k} {v}" for k, v in row["best_us"].items())
                )
        if args.stock_trials > 0:
            name, precision = args.models.split(",")[0], args.precisions.split(",")[0]
            print(f"stock tune_relax on {name} {precision}, {args.stock_trials} trials", flush=True)
            log["stock"] = run_stock(
                models[name],
                fp16=precision == "fp16",
                trials=args.stock_trials,
                work=args.work / "stock",
            )
            print(f"  stock: {log['stock'].get('trials_per_sec')} trials/s", flush=True)
    finally:
        args.records_out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(log, indent=1)
        (args.records_out.parent / "gpu_tune_log.json").write_text(text)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            (args.out / f"gpu_tune-{args.tag}-{stamp}.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
