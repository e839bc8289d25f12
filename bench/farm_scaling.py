"""Farm scaling: trials/s with 1 and 2 measure workers against stock MetaSchedule, in one run.

``--gpus 1,2,4,8`` (issue 22) runs the farm once per count instead: N measure workers, worker i
pinned to GPU i (``tunefarm worker --device i``) with a warm pool of its share of the host's
cores, one coordinator (this process), one job. Each row also gives the coordinator's search
time per batch, the build pools' busy share and the GPU timers' busy share, so the limit shows.

Each farm run starts real ``tunefarm worker`` processes on a Redis server of its own and tunes
in this process (the coordinator's part) with ``CeleryTrialExecutor``. The stock run is
``tune_relax`` with ``LocalBuilder``/``LocalRunner``. Same model, tasks, seed, budget and search
settings throughout. Results go to ``bench/results/farm_scaling-<host>-<UTC time>.json``.

The overlap rows tune one task for several batches (``--overlap-trials``), where MetaSchedule's
own loop searches and measures in turn: MetaSchedule's loop against ``tuner/overlapped_search.py``
(the next batch searched while the current one is measured), and stock on the same task.

    .venv/bin/python bench/farm_scaling.py [--trials 64] [--model M.onnx] [--skip-stock]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import local_tuning as common

from tunefarm.tuner.search import FAST_SEARCH, SearchSettings


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def start_workers(
    count: int,
    broker_url: str,
    logs: Path,
    *,
    target: str,
    concurrency: int,
    devices: list[int] | None = None,
) -> list[subprocess.Popen[str]]:
    """``count`` measure workers; with ``devices``, worker i measures on GPU ``devices[i]``."""
    env = {**os.environ, "TUNEFARM_BROKER_URL": broker_url}
    workers = []
    for index in range(count):
        log = logs / f"worker-{index}.log"
        pinned = ["--device", str(devices[index])] if devices is not None else []
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tunefarm",
                    "worker",
                    "--target",
                    target,
                    "--concurrency",
                    str(concurrency),
                    *pinned,
                ],
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )
        )
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    return workers


def own_or_given_broker(scratch: Path, broker_url: str | None) -> tuple[Any, str]:
    """A redis-server of our own, or the one given (emptied first)."""
    if broker_url is None:
        return start_redis(scratch)
    import redis

    redis.Redis.from_url(broker_url).flushdb()
    return None, broker_url


class TimedExecutor:
    """Wraps the farm executor to add up, as results come back, each trial's queueing (sent
    until a measuring process took it up), build, run and wait for the device."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queue_sec = 0.0
        self.build_sec = 0.0
        self.measure_sec = 0.0
        self.device_wait_sec = 0.0

    def submit(self, requests: list[Any]) -> list[Any]:
        sent = time.time()
        return [_TimedHandle(self, handle, sent) for handle in self.inner.submit(requests)]

    def parallel_trials(self) -> int | None:
        return self.inner.parallel_trials()  # type: ignore[no-any-return]


class _TimedHandle:
    def __init__(self, owner: TimedExecutor, handle: Any, sent: float) -> None:
        self.owner = owner
        self.handle = handle
        self.sent = sent
        self.counted = False

    def done(self) -> bool:
        return bool(self.handle.done())

    def result(self) -> Any:
        result = self.handle.result()
        if not self.counted:
            self.counted = True
            if result.started_unix:
                self.owner.queue_sec += max(0.0, result.started_unix - self.sent)
            self.owner.build_sec += result.build_sec
            self.owner.measure_sec += result.measure_sec
            self.owner.device_wait_sec += result.device_wait_sec
        return result


@contextlib.contextmanager
def search_loop(overlap: bool) -> Iterator[None]:
    """Which tuning loop ``tune()`` runs (``Settings.search_overlap``)."""
    before = os.environ.get("TUNEFARM_SEARCH_OVERLAP")
    os.environ["TUNEFARM_SEARCH_OVERLAP"] = "1" if overlap else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNEFARM_SEARCH_OVERLAP", None)
        else:
            os.environ["TUNEFARM_SEARCH_OVERLAP"] = before


def run_stock_first_task(
    mod: Any,
    target: Any,
    *,
    trials: int,
    trials_per_iter: int,
    seed: int,
    order: list[str],
    work_dir: Path,
    builder_timeout: float,
) -> dict[str, Any]:
    """Stock MetaSchedule (``tune_tasks``, LocalBuilder/LocalRunner) on the first task only."""
    import tvm.s_tir.meta_schedule as ms

    from tunefarm.tuner.search import ProgressCallback, TaskProgress, TuningReport
    from tunefarm.tuner.tasks import extract_tuning_tasks

    tasks = extract_tuning_tasks(mod, target=target)
    tasks.sort(key=lambda task: order.index(task.name))
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=[tasks[0].extracted], work_dir=str(work_dir), seed=seed
    )
    name = str(contexts[0].task_name)
    counter = ProgressCallback([name], TuningReport(tasks={name: TaskProgress(name)}), None)
    common.quiet_meta_schedule()
    with ms.Profiler() as profiler, common.stopwatch() as wall:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(work_dir),
            max_trials_global=trials,
            max_trials_per_task=trials,
            num_trials_per_iter=trials_per_iter,
            builder=ms.builder.LocalBuilder(timeout_sec=builder_timeout),
            runner=ms.runner.LocalRunner(
                evaluator_config=ms.runner.EvaluatorConfig(**common.MEASURE)
            ),
            database="json",
            measure_callbacks=[*ms.MeasureCallback.create("default"), counter],
        )
    report = counter.report
    return {
        "side": f"stock, first task only ({name})",
        "num_trials_per_iter": trials_per_iter,
        "trials_run": report.trials,
        "failed_trials": report.failures,
        "wall_sec": round(wall["sec"], 3),
        "trials_per_sec": common._rate(report.trials, wall["sec"]),
        "builder_timeout_sec": builder_timeout,
        **common.profile_fields(profiler),
    }


def run_farm(
    mod: Any,
    target: Any,
    *,
    workers: int,
    settings: SearchSettings,
    trials: int,
    per_task: int,
    seed: int,
    order: list[str],
    scratch: Path,
    broker_url: str | None,
    target_text: str,
    concurrency: int,
    chunk_size: int | None,
    overlap: bool = False,
    first_task_only: bool = False,
    devices: list[int] | None = None,
) -> dict[str, Any]:
    import tvm.s_tir.meta_schedule as ms

    from tunefarm.tuner import overlapped_search
    from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
    from tunefarm.tuner.search import tune
    from tunefarm.tuner.tasks import extract_tuning_tasks
    from tunefarm.tuner.trial import MeasureSettings
    from tunefarm.tuning_db import SqlDatabase
    from tunefarm.workers.celery_app import create_app
    from tunefarm.workers.farm_executor import CeleryTrialExecutor
    from tunefarm.workers.queues import measure_queue

    redis_process, broker_url = own_or_given_broker(scratch, broker_url)
    processes = start_workers(
        workers,
        broker_url,
        scratch,
        target=target_text,
        concurrency=concurrency,
        devices=devices,
    )
    try:
        farm = CeleryTrialExecutor(
            create_app(broker_url), measure_queue(target), chunk_size=chunk_size
        )
        executor = TimedExecutor(farm)
        database = SqlDatabase(f"sqlite:///{scratch / 'tuning.db'}", target=target)
        runner = TrialRunner(executor, settings=MeasureSettings(**common.MEASURE))
        common.quiet_meta_schedule()
        overlapped_search.last_stats = overlapped_search.LoopStats()
        with (
            search_loop(overlap),
            ms.Profiler() as profiler,
            common.stopwatch() as wall,
        ):
            tasks = extract_tuning_tasks(mod, target=target)
            tasks.sort(key=lambda task: order.index(task.name))
            if first_task_only:
                tasks = tasks[:1]
            report = tune(
                tasks,
                target=target,
                database=database,
                builder=CandidateWriter(str(scratch / "candidates")),
                runner=runner,
                total_trials=trials,
                max_trials_per_task=per_task,
                settings=settings,
                seed=seed,
                work_dir=str(scratch / "logs"),
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        if redis_process is not None:
            redis_process.kill()
    table = common.profile_table(profiler)
    trials_run = max(1, report.trials)
    split = {
        "search_in_coordinator": round(
            sum(v for k, v in table.items() if k.startswith("EvoSearch")), 3
        ),
        "cost_model": round(table.get("MeasureCallback/UpdateCostModel", 0.0), 3),
        "waiting_for_workers": round(table.get("JoinRunnerFutures", 0.0), 3),
        "queueing_on_workers": round(executor.queue_sec, 3),
        "build_on_workers": round(executor.build_sec, 3),
        "run_on_workers": round(executor.measure_sec, 3),
        "device_wait_on_workers": round(executor.device_wait_sec, 3),
    }
    stats = overlapped_search.last_stats
    batches = max(1, -(-report.trials // settings.num_trials_per_iter))
    wall_sec = max(wall["sec"], 1e-9)
    limits = {
        # The three places a batch can wait: the search here, the build pools, the GPU timers.
        "search_sec_per_batch": round(split["search_in_coordinator"] / batches, 3),
        "build_busy_share": round(executor.build_sec / (wall_sec * workers * concurrency), 3),
        "device_busy_share": round(executor.measure_sec / (wall_sec * workers), 3),
    }
    return {
        "side": f"farm, {workers} worker(s)"
        + (", overlapped search" if overlap else ", MetaSchedule's loop")
        + (", first task only" if first_task_only else ""),
        "search_loop": "overlapped" if overlap else "metaschedule",
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "chunk_size": chunk_size,
        "search_settings": dataclasses.asdict(settings),
        "trials_run": report.trials,
        "failed_trials": report.failures,
        "wall_sec": round(wall["sec"], 3),
        "trials_per_sec": common._rate(report.trials, wall["sec"]),
        "measured_by": dict(runner.measured_by),
        "resent_chunks": farm.resent,
        "trials_per_task": common.per_task_trials(report),
        "time_split_sec": split,
        "time_split_ms_per_trial": {
            name: round(1000 * sec / trials_run, 1) for name, sec in split.items()
        },
        "devices": devices,
        "limits": limits,
        "overlapped_batches": stats.overlapped_batches if overlap else None,
        "batches": stats.batches if overlap else None,
        **common.profile_fields(profiler),
    }


def gpu_row_name(args: argparse.Namespace, count: int) -> str:
    return f"one_gpu_{count}_workers" if args.one_gpu else f"gpus_{count}"


def gpu_rows(
    mod: Any,
    target: Any,
    args: argparse.Namespace,
    settings: SearchSettings,
    scratch: Path,
    farm_options: dict[str, Any],
    overlap: bool,
) -> dict[str, Any]:
    """One farm run per GPU count: worker i on GPU i, each with its share of the cores. With
    ``--one-gpu``, the counts are of workers that all measure on GPU 0."""
    rows = {}
    cores = os.cpu_count() or 1
    for count in args.gpus:
        devices = [0] * count if args.one_gpu else list(range(count))
        # One core stays with the coordinator's search; the rest are split between the workers.
        share = args.concurrency if args.concurrency > 1 else max(1, (cores - 1) // count)
        print(f"farm, {count} worker(s) on GPU(s) {devices}, {share} build processes each ...")
        folder = scratch / f"gpus{count}"
        folder.mkdir()
        rows[gpu_row_name(args, count)] = run_farm(
            mod,
            target,
            workers=count,
            settings=settings,
            scratch=folder,
            overlap=overlap,
            devices=devices,
            **{**farm_options, "concurrency": share},
        )
        # Each row as it ends: a device call cut off at its time limit keeps the rows it has.
        args.out.mkdir(parents=True, exist_ok=True)
        partial = args.out / f"farm_scaling-{socket.gethostname()}-partial.json"
        partial.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--target", default=common.TARGET, help="llvm (default) or cuda")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--gpus",
        type=lambda text: [int(n) for n in text.split(",")],
        help="1,2,4,8: one farm run per count, a worker pinned per GPU (issue 22); only these rows",
    )
    parser.add_argument(
        "--one-gpu",
        action="store_true",
        help="with --gpus: that many workers, all measuring on GPU 0 (where one GPU is lent)",
    )
    parser.add_argument("--fp16", action="store_true", help="tune the fp16 model")
    parser.add_argument("--concurrency", type=int, default=1, help="warm processes per worker")
    parser.add_argument("--broker-url", help="use this Redis instead of starting one")
    parser.add_argument(
        "--chunk-size", type=int, help="candidates per Celery task (default: one per worker)"
    )
    parser.add_argument(
        "--stock-builder-timeout", type=float, default=30.0, help="LocalBuilder's timeout (s)"
    )
    parser.add_argument("--skip-fast", action="store_true", help="no FAST_SEARCH row")
    parser.add_argument(
        "--skip-main", action="store_true", help="only the overlap rows (a call's time is short)"
    )
    parser.add_argument(
        "--overlap-trials",
        type=int,
        default=256,
        help="budget of the overlap rows: the first task alone, 64 per batch (0: no such rows)",
    )
    args = parser.parse_args(argv)
    if args.broker_url is None and shutil.which("redis-server") is None:
        print("farm_scaling needs redis-server on the PATH", file=sys.stderr)
        return 2
    if not args.skip_stock and not args.gpus and (problem := common.stock_prerequisite_error()):
        print(problem, file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    from tunefarm.tuner.targets import parse_target

    target = parse_target(args.target)
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        scratch = Path(tmp)
        model_path = args.model or scratch / "model.onnx"
        model = (
            {"source": str(args.model)} if args.model else common.build_default_model(model_path)
        )
        mod = common.prepare_module(model_path, target, fp16=args.fp16)
        order = common.stock_task_order(mod, target)
        setup = common.import_untimed()
        same = SearchSettings(num_trials_per_iter=64)
        from tunefarm.tuner.settings import Settings

        default_overlap = Settings().search_overlap
        rows: dict[str, Any] = {}
        farm_options = {
            "trials": args.trials,
            "per_task": args.trials,
            "seed": args.seed,
            "order": order,
            "broker_url": args.broker_url,
            "target_text": args.target,
            "concurrency": args.concurrency,
            "chunk_size": args.chunk_size,
        }
        if args.gpus:
            rows.update(gpu_rows(mod, target, args, same, scratch, farm_options, default_overlap))
        elif not args.skip_stock and not args.skip_main:
            import tvm.s_tir.meta_schedule as ms

            print("stock tune_relax, 64 trials/iter ...", flush=True)
            rows["stock"] = common.run_stock(
                mod,
                target,
                trials=args.trials,
                per_task=args.trials,
                trials_per_iter=64,
                seed=args.seed,
                order=order,
                work_dir=scratch / "stock",
                builder=ms.builder.LocalBuilder(timeout_sec=args.stock_builder_timeout),
            )
            rows["stock"]["builder_timeout_sec"] = args.stock_builder_timeout
        for workers in [] if args.skip_main or args.gpus else args.workers:
            print(f"farm, {workers} worker(s), MetaSchedule search defaults ...", flush=True)
            (scratch / f"farm{workers}").mkdir()
            rows[f"farm_{workers}"] = run_farm(
                mod,
                target,
                workers=workers,
                settings=same,
                scratch=scratch / f"farm{workers}",
                overlap=default_overlap,
                **farm_options,
            )
        if not args.skip_fast and not args.skip_main and not args.gpus:
            workers = max(args.workers)
            print(f"farm, {workers} worker(s), FAST_SEARCH ...", flush=True)
            (scratch / "farmfast").mkdir()
            rows[f"farm_{workers}_fast"] = run_farm(
                mod,
                target,
                workers=workers,
                settings=FAST_SEARCH,
                scratch=scratch / "farmfast",
                overlap=default_overlap,
                **farm_options,
            )
        if args.overlap_trials > 0 and not args.gpus:
            overlap_options = {
                **farm_options,
                "trials": args.overlap_trials,
                "per_task": args.overlap_trials,
            }
            if not args.skip_stock:
                print(f"stock, first task, {args.overlap_trials} trials ...", flush=True)
                rows["stock_first_task"] = run_stock_first_task(
                    mod,
                    target,
                    trials=args.overlap_trials,
                    trials_per_iter=64,
                    seed=args.seed,
                    order=order,
                    work_dir=scratch / "stock-first",
                    builder_timeout=args.stock_builder_timeout,
                )
            for workers in args.workers:
                for overlap in (False, True):
                    loop = "overlap" if overlap else "serial"
                    print(f"farm, {workers} worker(s), first task, {loop} ...", flush=True)
                    name = f"farm_{workers}_first_task_{loop}"
                    (scratch / name).mkdir()
                    rows[name] = run_farm(
                        mod,
                        target,
                        workers=workers,
                        settings=same,
                        scratch=scratch / name,
                        overlap=overlap,
                        first_task_only=True,
                        **overlap_options,
                    )
    rate = {name: row["trials_per_sec"] for name, row in rows.items()}

    def stock_of(name: str) -> float | None:
        return rate.get("stock_first_task" if "first_task" in name else "stock")

    ratios = {
        f"{name}_over_stock": common._ratio(value, stock_of(name))
        for name, value in rate.items()
        if not name.startswith("stock") and stock_of(name) is not None
    }
    for suffix in ("", "_first_task_serial", "_first_task_overlap"):
        if f"farm_1{suffix}" in rate and f"farm_2{suffix}" in rate:
            ratios[f"farm_2{suffix}_over_farm_1{suffix}"] = common._ratio(
                rate[f"farm_2{suffix}"], rate[f"farm_1{suffix}"]
            )
    for count in args.gpus or []:
        name, one = gpu_row_name(args, count), gpu_row_name(args, 1)
        if count != 1 and name in rate and one in rate:
            ratio = common._ratio(rate[name], rate[one])
            ratios[f"{name}_over_{one}"] = ratio
            # The goal: N GPUs give at least 0.85 N times the trials/s of one.
            ratios[f"{name}_efficiency"] = round(ratio / count, 3) if ratio else None
    for workers in args.workers:
        serial, overlapped = (f"farm_{workers}_first_task_{loop}" for loop in ("serial", "overlap"))
        if serial in rate and overlapped in rate:
            ratios[f"{overlapped}_over_serial"] = common._ratio(rate[overlapped], rate[serial])
    result = {
        "benchmark": "farm_scaling",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": common.machine_info(),
        "versions": common.versions(),
        "settings": {
            "trials": args.trials,
            "seed": args.seed,
            "model": model,
            "measure": common.MEASURE,
            "target": str(target),
            "fp16": args.fp16,
            "gpus": args.gpus,
            "one_gpu": args.one_gpu,
            "overlap_trials": args.overlap_trials,
            "default_search_loop": "overlapped" if default_overlap else "metaschedule",
        },
        "setup": setup,
        "runs": rows,
        "ratios": ratios,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"farm_scaling-{socket.gethostname()}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'run':<44}{'trials/s':>10}")
    for name, value in rate.items():
        print(f"{name:<44}{value if value is not None else float('nan'):>10.2f}")
    for name, value in ratios.items():
        print(f"{name:<44}{value if value is not None else float('nan'):>10.2f}x")
    for name, row in rows.items():
        if "time_split_ms_per_trial" in row:
            print(f"{name} (ms per trial): {row['time_split_ms_per_trial']}")
        if row.get("devices") is not None:
            print(f"{name} limits: {row['limits']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
