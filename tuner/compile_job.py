"""The local job: ONNX model in, tuned ``model.so`` and ``manifest.json`` out.

Steps: validate → import → pass pipeline → tasks → database lookup → default schedules of the
CPU tasks with no record → tune where the time is →
build with the best records → package with a latency report and an output check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import tvm
from tvm.target import Target

from tunefarm.tuner import build, interrupts, vendor_choice, vendor_kernels
from tunefarm.tuner.compile_options import CompileOptions
from tunefarm.tuner.coverage_plan import CoveragePlan, plan_coverage
from tunefarm.tuner.cpu_schedule_rules import TUNED, TVM_DEFAULT, schedule_origin
from tunefarm.tuner.cpu_threads import use_physical_cores
from tunefarm.tuner.default_schedules import (
    DefaultScheduleReport,
    measure_default_schedules,
    needs_defaults,
)
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.html_report import report_trials, write_report
from tunefarm.tuner.kernel_profile import METHOD as KERNEL_PROFILE_METHOD
from tunefarm.tuner.kernel_profile import KernelProfile, in_model_profile
from tunefarm.tuner.latency import TimeBox, random_inputs
from tunefarm.tuner.library_report import LibraryReport, ReportSettings, report_library
from tunefarm.tuner.model_analysis import analyse_model
from tunefarm.tuner.model_validation import ValidatedModel
from tunefarm.tuner.pipelines import PipelineResult
from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
from tunefarm.tuner.record_verification import verify_claimed_records
from tunefarm.tuner.search import TuningReport, tune
from tunefarm.tuner.targets import runtime_device
from tunefarm.tuner.tasks import TuningTask, look_up_tasks
from tunefarm.tuner.trial import MeasureSettings, measure_settings_for
from tunefarm.tuner.trial_budget import TaskOutlook
from tunefarm.tuner.trial_executor import TrialExecutor
from tunefarm.tuner.vendor_choice import ChainChoice
from tunefarm.tuner.warm_pool import WarmPool, default_worker_count
from tunefarm.tuner.warm_start import WarmStart
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.job_state import JobState
from tunefarm.tuning_db.sql_database import mean_run_sec

MANIFEST_VERSION = 1


Phase = Literal[JobState.IMPORTING, JobState.TUNING, JobState.BUILDING]
"""The states a job passes through while it runs (the others are queued and the ends)."""
"""The phases of a job, as a Job row records them."""


class CompileObserver(Protocol):
    def stage(self, phase: Phase, message: str) -> None: ...

    def planned(self, plan: CoveragePlan) -> None: ...

    def tuning_started(self, total_trials: int, tasks: list[TuningTask]) -> None: ...

    def tuning_progress(self, report: TuningReport) -> None: ...

    def tuning_finished(self) -> None: ...


class SilentObserver:
    def stage(self, phase: Phase, message: str) -> None:
        pass

    def planned(self, plan: CoveragePlan) -> None:
        pass

    def tuning_started(self, total_trials: int, tasks: list[TuningTask]) -> None:
        pass

    def tuning_progress(self, report: TuningReport) -> None:
        pass

    def tuning_finished(self) -> None:
        pass


@dataclass
class CompileResult:
    library_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    report_path: Path
    """``report.html`` beside the manifest (``tuner.html_report``)."""


def compile_model(
    options: CompileOptions,
    *,
    observer: CompileObserver | None = None,
    executor: TrialExecutor | None = None,
) -> CompileResult:
    """Run the whole job; raise ``UserInputError`` for anything the user must fix.

    Trials run on ``executor`` (the farm's measure workers, say); by default on a local
    ``WarmPool`` started for this job. A Ctrl-C (``tuner.interrupts``) stops it at its next
    step with ``KeyboardInterrupt``; what was measured stays in the database.
    """
    with interrupts.cooperative():
        return _compile_model(
            options,
            observer=_StopsOnInterrupt(observer or SilentObserver()),
            executor=executor,
        )


class _StopsOnInterrupt:
    """An observer that, before each report, stops the compile if the user pressed Ctrl-C:
    the stages are the compile's steps."""

    def __init__(self, inner: CompileObserver) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def report(*args: Any, **kwargs: Any) -> Any:
            interrupts.stop_if_requested()
            return attribute(*args, **kwargs)

        return report


def _compile_model(
    options: CompileOptions,
    *,
    observer: Any,
    executor: TrialExecutor | None,
) -> CompileResult:
    started = time.perf_counter()
    target = options.spec.tvm_target
    if executor is None and not runtime_device(target).exist:
        # Checked before anything is built or filed: a local compile times every candidate here.
        raise UserInputError(
            f"this machine has no {target.kind.name.upper()} device to measure on; compile for "
            f"{options.spec.target!r} on a machine that has one, or on the farm (--farm)"
        )
    toolchain = None
    if options.spec.options.vendor_kernels:
        vendor_kernels.require_cuda(target)
        # Up front, not when the library links: missing wheels are the user's to install.
        toolchain = vendor_kernels.find_toolchain()
    measure = options.measure or measure_settings_for(target)
    use_physical_cores()  # the manifest's timings, and the warm pool spawned below

    # With --vendor-kernels, each chain goes to cuDNN/cuBLASLt only where that is faster than
    # its tuned kernel (tuner.vendor_choice); the reasons go into the manifest.
    vendor_choices: list[ChainChoice] = []
    analysed = analyse_model(
        options.model_path,
        target=target,
        layout=options.spec.options.layout,
        fp16=options.spec.options.fp16,
        vendor_kernels=options.spec.options.vendor_kernels,
        tf32=options.spec.options.tf32,
        vendor_select=vendor_choice.selector(
            target=target, database_url=options.database_url, into=vendor_choices
        )
        if options.spec.options.vendor_kernels
        else None,
        max_bytes=options.max_model_bytes,
        on_step=lambda message: observer.stage(JobState.IMPORTING, message),
    )
    validated, pipeline, tasks = analysed.validated, analysed.pipeline, analysed.tasks

    # The database is opened only once the input is known to be good.
    database = SqlDatabase(options.database_url, target=target)
    look_up_tasks(tasks, database=database, target=target)
    # Issue 6 (API): records a team imported count only once a worker has re-measured them.
    if verify_claimed_records(
        tasks, database=database, target=target, executor=executor, settings=measure
    ).measured:
        look_up_tasks(tasks, database=database, target=target)
    plan = plan_coverage(
        tasks,
        database=database,
        trials=options.trials_left,
        max_trials_per_task=options.spec.options.max_trials_per_task,
    )
    observer.planned(plan)
    observer.stage(JobState.TUNING, plan.summary())
    defaults_wanted = [task for task in tasks if needs_defaults(task, target)]
    tuning_started = time.perf_counter()
    report = TuningReport()
    defaults = DefaultScheduleReport()
    measured_by: dict[str, int] = {}
    # Covered or not, every task may get trials (issue 15, "tune more"): the budget follows
    # each task's share of the time and its room to improve (tuner.trial_budget).
    tune_now = bool(tasks) and options.trials_left > 0
    with contextlib.ExitStack() as stack:
        if executor is None and (defaults_wanted or tune_now):
            workers = options.workers or default_worker_count(target.kind.name)
            executor = stack.enter_context(
                WarmPool(workers, timeout_sec=options.measure_timeout_sec)
            )
        if defaults_wanted and executor is not None:
            observer.stage(
                JobState.TUNING, f"timing default schedules of {len(defaults_wanted)} tasks"
            )
            defaults = measure_default_schedules(
                defaults_wanted,
                database=database,
                target=target,
                executor=executor,
                settings=measure,
            )
        if tune_now and executor is not None:
            report, measured_by = _tune(
                tasks,
                options=options,
                target=target,
                database=database,
                observer=observer,
                executor=executor,
                measure=measure,
            )
    tuning_sec = time.perf_counter() - tuning_started

    observer.stage(JobState.BUILDING, "building with the best records")
    cuda_graph = build.use_cuda_graph(options.spec.options.cuda_graph, target)
    vendor_calls = vendor_kernels.vendor_calls(pipeline.mod)
    linked = toolchain if vendor_calls else None  # no chain chosen: nothing to link
    if linked is not None:
        # The graph-free build and the reports run the library in this process.
        vendor_kernels.register_in_process(linked)
    # A CUDA graph replays as one launch, with nothing to time per kernel: the kernels are
    # profiled in a build without the graph. That build runs beside the library's own (TVM
    # releases the GIL while it lowers, and NVRTC compiles a module on one core), so on the
    # GPU host the two take the time of one (issue 16, warm paths).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="graph-free-build") as beside:
        graph_free = (
            beside.submit(
                build.compile_tuned,
                pipeline.mod,
                target=target,
                database=database,
                cuda_graph=False,
            )
            if cuda_graph
            else None
        )
        tuned = build.compile_tuned(
            pipeline.mod, target=target, database=database, cuda_graph=cuda_graph
        )
        options.out_dir.mkdir(parents=True, exist_ok=True)
        library_path = options.out_dir / "model.so"
        sha256 = build.export_library(tuned, library_path, vendor=linked)

        observer.stage(
            JobState.BUILDING, "measuring latency and checking outputs against ONNX Runtime"
        )
        # Issue 15: only the library's own latency can fail the compile; the output check, the
        # untuned baseline and ONNX Runtime's timing are reports.
        reports_started = time.perf_counter()
        library_report = report_library(
            library_path,
            validated=validated,
            pipeline=pipeline,
            target=target,
            database=database,
            settings=ReportSettings(
                timer=TimeBox(
                    budget_sec=options.latency_budget_sec, max_samples=options.latency_samples
                ),
                baseline=options.spec.options.baseline,
                seed=options.spec.options.seed or 0,
                fp16=options.spec.options.fp16,
                cuda_graph=cuda_graph,
            ),
            on_step=lambda message: observer.stage(JobState.BUILDING, message),
        )
        observer.stage(JobState.BUILDING, "timing each kernel in the model")
        in_model = in_model_profile(
            graph_free.result
            if graph_free is not None
            else lambda: tvm.runtime.load_module(str(library_path)),
            target=target,
            inputs=random_inputs(validated.inputs, seed=options.spec.options.seed or 0),
        )
    reports_sec = time.perf_counter() - reports_started

    manifest = _manifest(
        options=options,
        target=target,
        database=database,
        validated=validated,
        pipeline=pipeline,
        tasks=tasks,
        plan=plan,
        report=report,
        measured_by=measured_by,
        defaults=defaults,
        sha256=sha256,
        library_report=library_report,
        in_model=in_model,
        vendor_calls=vendor_calls,
        vendor_choices=vendor_choices,
        runtime_libraries=list(linked.libraries) if linked is not None else [],
        timings={
            "tuning_sec": round(tuning_sec, 3),
            "reports_sec": round(reports_sec, 3),
            "total_sec": round(time.perf_counter() - started, 3),
        },
    )
    manifest_path = options.out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    report_path = write_report(
        options.out_dir / "report.html", manifest, report_trials(manifest, database.engine)
    )
    return CompileResult(
        library_path=library_path,
        manifest_path=manifest_path,
        manifest=manifest,
        report_path=report_path,
    )


def _tune(
    tasks: list[TuningTask],
    *,
    options: CompileOptions,
    target: Target,
    database: SqlDatabase,
    observer: CompileObserver,
    executor: TrialExecutor,
    measure: MeasureSettings,
) -> tuple[TuningReport, dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="tunefarm-") as scratch:
        builder = CandidateWriter(str(Path(scratch) / "candidates"))
        runner = TrialRunner(executor, settings=measure)
        observer.tuning_started(options.trials_left, tasks)
        try:
            report = tune(
                tasks,
                target=target,
                database=database,
                builder=builder,
                runner=runner,
                total_trials=options.trials_left,
                max_trials_per_task=options.spec.options.max_trials_per_task,
                settings=options.search,
                seed=options.spec.options.seed,
                warm_start=_warm_start(options, database),
                work_dir=str(Path(scratch) / "logs"),
                on_progress=observer.tuning_progress,
                log_level=logging.INFO if options.verbose else logging.WARNING,
                # GPU candidates build in parallel for seconds each (issue 16); a CPU's are
                # cheap and timed one at a time, so their first batch stays whole.
                first_batch=executor.parallel_trials() if target.kind.name != "llvm" else None,
                outlook={
                    task.name: TaskOutlook(
                        task.name,
                        task.weight,
                        task.flops,
                        database.best_run_sec(task.mod, target),
                        spent=database.measured_count(task.mod),
                    )
                    for task in tasks
                },
            )
        finally:
            observer.tuning_finished()
        return report, dict(runner.measured_by)


def _rounded_us(variants: dict[str, float | None]) -> dict[str, float | None]:
    return {
        rule: round(sec * 1e6, 3) if sec is not None else None for rule, sec in variants.items()
    }


def _warm_start(options: CompileOptions, database: SqlDatabase) -> WarmStart | None:
    if not options.spec.options.warm_start:
        return None
    # Up to 4 neighbours x 32 records: the seeds are the best few, and XGBoost needs about a
    # hundred samples before its predictions are more than noise, so pre-training wants more.
    return WarmStart(
        similar_records=lambda task: database.similar_records(
            task.mod, workloads=4, per_workload=32
        )
    )


def _manifest(
    *,
    options: CompileOptions,
    target: Target,
    database: SqlDatabase,
    validated: ValidatedModel,
    pipeline: PipelineResult,
    tasks: list[TuningTask],
    plan: CoveragePlan,
    report: TuningReport,
    measured_by: dict[str, int],
    defaults: DefaultScheduleReport,
    sha256: str,
    library_report: LibraryReport,
    in_model: KernelProfile | str,
    timings: dict[str, float],
    vendor_calls: dict[str, int],
    vendor_choices: list[ChainChoice],
    runtime_libraries: list[str],
) -> dict[str, Any]:
    fingerprint = database.target_fingerprint
    task_rows: list[dict[str, Any]] = []
    seeded: list[dict[str, Any]] = []
    reuse = {task.name: task.reuse for task in plan.tasks}
    recorded_us: dict[str, float | None] = {}
    in_model_kernels = in_model.by_name() if isinstance(in_model, KernelProfile) else {}
    for task in tasks:
        progress = report.tasks.get(task.name)
        best_record = database.query_tuning_record(task.mod, target, task.name)
        best_after = (
            mean_run_sec([float(sec) for sec in best_record.run_secs])
            if best_record is not None
            else None
        )
        recorded_us[task.name] = best_after * 1e6 if best_after is not None else None
        kernel = in_model_kernels.get(task.name)
        schedule = schedule_origin(best_record.trace) if best_record is not None else TVM_DEFAULT
        improved = best_after is not None and (
            task.best_sec_before is None or best_after < task.best_sec_before
        )
        if progress is not None and progress.trials > 0 and schedule == TUNED and improved:
            source = "tuned now"
        elif reuse.get(task.name) == "class":
            source = f"reused, measured on another {fingerprint.target_class} machine"
        elif task.covered:
            source = "reused"
        else:
            source = "default schedule"
        warm_start = None
        if progress is not None and progress.warm_start is not None:
            warm_start = progress.warm_start.as_dict()
            seeded.append(warm_start)
        task_rows.append(
            {
                "name": task.name,
                "weight": task.weight,
                "flops": task.flops,
                "trials": progress.trials if progress is not None else 0,
                "failed_trials": progress.failures if progress is not None else 0,
                "best_latency_us": round(best_after * 1e6, 3) if best_after is not None else None,
                "in_model_us": round(kernel.us_per_call, 3) if kernel is not None else None,
                "source": source,
                "schedule": schedule,
                "default_schedules": _rounded_us(defaults.tasks[task.name].variants)
                if task.name in defaults.tasks
                else None,
                "workload_key": database.workload_key(task.mod),
                "warm_start": warm_start,
            }
        )
    return {
        "manifest_version": MANIFEST_VERSION,
        "model": {
            "path": str(validated.path),
            "format": "onnx" if validated.model is not None else "torch.export",
            "opset": validated.opset if validated.model is not None else None,
        },
        "target": {
            "requested": options.spec.target,
            "json": json.loads(fingerprint.target_json),
            "fingerprint": fingerprint.key,
            "fingerprint_details": {
                "hardware": fingerprint.details["hardware"],
                "tvm_version": fingerprint.details["tvm_version"],
            },
        },
        "machine": {"hostname": platform.node(), "processor": platform.processor() or None},
        "inputs": [signature.as_dict() for signature in validated.inputs],
        "outputs": [signature.as_dict() for signature in validated.outputs],
        "library": {
            "file": "model.so",
            "sha256": sha256,
            # What the library loads at run time beyond TVM (tunefarm's loader brings them in).
            "runtime_libraries": runtime_libraries,
        },
        "pipeline": {
            "name": pipeline.pipeline,
            "phases": pipeline.phases,
            "layout": pipeline.layout,
            "fp16": options.spec.options.fp16,
            "vendor_calls": dict(vendor_calls),
            "vendor_choices": [choice.as_dict() for choice in vendor_choices],
            "cuda_graph": build.use_cuda_graph(options.spec.options.cuda_graph, target),
            "fused": [kernel.as_dict() for kernel in pipeline.fused],
        },
        "tuning": {
            "trials_requested": options.spec.trials,
            "trials_before_resume": sum(options.prior_trials.values()),
            "trials_run": report.trials,
            "failed_trials": report.failures,
            "seed": options.spec.options.seed,
            "measured_by": measured_by,
            "default_schedules": {
                "tasks": len(defaults.tasks),
                "measured": defaults.measured,
                "failed": defaults.failed,
                "seconds": round(defaults.seconds, 3),
            },
            "warm_start": {
                "enabled": options.spec.options.warm_start,
                "tasks_seeded": len(seeded),
                "seeds_measured": sum(figures["measured"] for figures in seeded),
            },
        },
        "coverage_before_tuning": plan.as_dict(),
        "tasks": task_rows,
        **library_report.as_manifest(),
        "in_model": in_model.as_manifest(recorded_us)
        if isinstance(in_model, KernelProfile)
        else {"method": KERNEL_PROFILE_METHOD, "not_run": in_model},
        "timings": timings,
    }
