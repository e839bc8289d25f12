"""Run MetaSchedule's search (task scheduler, XGBoost cost model, evolutionary search) on the
tasks the database does not cover, measuring through any Builder/Runner pair."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import tvm.s_tir.meta_schedule as ms
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule import TuneContext
from tvm.s_tir.meta_schedule.builder import Builder
from tvm.s_tir.meta_schedule.database import Database
from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import Runner
from tvm.s_tir.meta_schedule.search_strategy import SearchStrategy
from tvm.s_tir.meta_schedule.utils import fork_seed
from tvm.target import Target

from tunefarm.tuner.cpu_schedule_rules import TUNED, schedule_origin
from tunefarm.tuner.cpu_threads import search_threads
from tunefarm.tuner.metaschedule_logging import METASCHEDULE_LOGGER, unnamed_handlers_set_aside
from tunefarm.tuner.schedule_rules import register_pooling_rules
from tunefarm.tuner.settings import Settings
from tunefarm.tuner.split_k import space_generator
from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuner.tensor_intrinsics import load_tensor_intrinsics
from tunefarm.tuner.trial_budget import TaskOutlook, allocate_trials
from tunefarm.tuner.warm_start import WarmStart, WarmStartFigures, WarmStartSearch
from tunefarm.tuning_db.similar_records import SimilarRecord
from tunefarm.tuning_db.sql_database import FAILED_RUN_SEC
from tunefarm.tuning_db.workload_key import workload_key


@dataclass(frozen=True)
class SearchSettings:
    """Evolutionary search knobs. The defaults are MetaSchedule's own."""

    population_size: int = 512
    init_measured_ratio: float = 0.2
    init_min_unmeasured: int = 50
    genetic_num_iters: int = 4
    genetic_mutate_prob: float = 0.85
    eps_greedy: float = 0.05
    num_trials_per_iter: int = 64
    batches_in_flight: int = 2
    """Batches out to the measure workers at once (our loop; 1: search only while idle)."""
    split_k: bool = False
    """CUDA tensor-core targets: add split-K sketches for small-output blocks
    (``tuner.split_k``). Off here, as MetaSchedule has it; ``configured_search`` turns it on."""

    def strategy(self) -> ms.search_strategy.EvolutionarySearch:
        return ms.search_strategy.EvolutionarySearch(
            population_size=self.population_size,
            init_measured_ratio=self.init_measured_ratio,
            init_min_unmeasured=self.init_min_unmeasured,
            genetic_num_iters=self.genetic_num_iters,
            genetic_mutate_prob=self.genetic_mutate_prob,
            eps_greedy=self.eps_greedy,
        )


# Few trials per task cannot use a 512-strong population: the search would cost more than
# the measurements. This profile keeps the search in proportion (see bench/local_tuning.py).
FAST_SEARCH = SearchSettings(
    population_size=128, init_min_unmeasured=32, genetic_num_iters=2, num_trials_per_iter=32
)


def configured_search() -> SearchSettings:
    """``FAST_SEARCH`` with the batch size and batches in flight of ``Settings``, where set,
    and its split-K switch."""
    settings = Settings()
    search = FAST_SEARCH
    if settings.search_batch is not None:
        search = replace(search, num_trials_per_iter=settings.search_batch)
    if settings.search_in_flight is not None:
        search = replace(search, batches_in_flight=settings.search_in_flight)
    return replace(search, split_k=settings.search_split_k)


@dataclass
class TaskProgress:
    name: str
    trials: int = 0
    failures: int = 0
    best_sec: float | None = None
    warm_start: WarmStartFigures | None = None
    """What the warm start did, for a task that had similar records; seeds count as trials."""


@dataclass
class TuningReport:
    trials: int = 0
    failures: int = 0
    tasks: dict[str, TaskProgress] = field(default_factory=dict)


ProgressListener = Callable[[TuningReport], None]


@derived_object
class ProgressCallback(PyMeasureCallback):
    """Counts trials and the best run time of each task as results come back."""

    def __init__(
        self, names: list[str], report: TuningReport, listener: ProgressListener | None
    ) -> None:
        super().__init__()
        self.names = names
        self.report = report
        self.listener = listener

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):  # type: ignore[no-untyped-def]
        progress = self.report.tasks[self.names[task_id]]
        for build, run in zip(builder_results, runner_results, strict=True):
            progress.trials += 1
            self.report.trials += 1
            if build.error_msg is not None or run.error_msg is not None or run.run_secs is None:
                progress.failures += 1
                self.report.failures += 1
                continue
            secs = [float(sec) for sec in run.run_secs]
            mean = sum(secs) / len(secs)
            if mean < FAILED_RUN_SEC and (progress.best_sec is None or mean < progress.best_sec):
                progress.best_sec = mean
        if self.listener is not None:
            self.listener(self.report)


MAX_ROUNDS = 4
"""Rounds of search: budget left by tasks whose space ran out goes to the others."""


def tune(
    tasks: list[TuningTask],
    *,
    target: Target,
    database: Database,
    builder: Builder,
    runner: Runner,
    total_trials: int,
    max_trials_per_task: int | None = None,
    settings: SearchSettings = FAST_SEARCH,
    seed: int | None = None,
    work_dir: str | None = None,
    on_progress: ProgressListener | None = None,
    log_level: int = logging.WARNING,
    warm_start: WarmStart | None = None,
    outlook: Mapping[str, TaskOutlook] | None = None,
    first_batch: int | None = None,
) -> TuningReport:
    """Tune ``tasks`` with up to ``total_trials`` measurements; records go to ``database``.

    Each task gets a share by its estimated time and its room to improve
    (``tuner.trial_budget``), from ``outlook`` (best run times and trials already spent; by
    default the tasks' FLOPs alone). A task whose design space runs out early (a reshape has
    one schedule) leaves its share unused, so the search runs again, up to ``MAX_ROUNDS``
    times, over the tasks that used their whole share, with what is left and the best times
    found so far. Later rounds start from the best records in the database and keep the same
    cost model.

    With ``warm_start``, a task with no record of its own in ``database`` starts from its
    similar records (``tuner.warm_start``): the cost model is pre-trained on them, and their
    re-applied traces are the task's first candidates, measured here and counted in its share.

    ``first_batch`` (the executor's parallel trials) sends the job's first batch in two parts,
    the first of that size, so the first results come back after one round of builds.
    """
    report = TuningReport(tasks={task.name: TaskProgress(task.name) for task in tasks})
    if not tasks or total_trials <= 0:
        return report
    work_dir = work_dir or tempfile.mkdtemp(prefix="tunefarm-tune-")
    load_tensor_intrinsics(target)
    register_pooling_rules()
    cost_model: ms.CostModel | None = None
    active = list(tasks)
    considered: set[str] = set()
    """Tasks whose warm start was looked up: only in the first round a task is tuned in."""
    pretrained: set[str] = set()
    """Workloads the cost model has learnt from (or must not, being tuned here)."""
    for round_index in range(MAX_ROUNDS if max_trials_per_task is None else 1):
        remaining = total_trials - report.trials
        if remaining <= 0 or not active:
            break
        shares = allocate_trials(
            [_outlook(task, outlook, report) for task in active],
            remaining,
            max_per_task=max_trials_per_task,
        )
        active = [task for task in active if shares[task.name] > 0]
        if not active:
            break
        before = {task.name: report.tasks[task.name].trials for task in active}
        # MetaSchedule prints its task table to stdout at INFO, and each time it makes its
        # loggers it leaves them at DEBUG: set the level we want before every round.
        logging.getLogger(METASCHEDULE_LOGGER).setLevel(log_level)
        strategies: dict[str, SearchStrategy] = {}
        if warm_start is not None:
            strategies = _warm_start_strategies(
                [task for task in active if task.name not in considered],
                warm_start=warm_start,
                database=database,
                target=target,
                settings=settings,
                report=report,
                pretrained=pretrained,
                seed=seed,
            )
            considered.update(task.name for task in active)
        with unnamed_handlers_set_aside():
            contexts, weights = _tune_contexts(
                active,
                work_dir=work_dir,
                settings=settings,
                strategies=strategies,
                seed=None if seed is None else seed + round_index,
            )
        if cost_model is None:
            cost_model = ms.CostModel.create(
                "xgb", num_tuning_cores=contexts[0].num_threads, tree_method="auto"
            )
        progress = ProgressCallback([str(c.task_name) for c in contexts], report, on_progress)
        # MetaSchedule's loop, or ours that searches the next batch while one is measured
        # (Settings.search_overlap picks).
        from tunefarm.tuner.overlapped_search import tune_tasks

        tune_tasks(
            tasks=contexts,
            seed=seed,
            task_weights=weights,
            work_dir=work_dir,
            max_trials_global=remaining,
            max_trials_per_task=[shares[str(context.task_name)] for context in contexts],
            num_trials_per_iter=max(
                1, min(settings.num_trials_per_iter, max(shares[task.name] for task in active))
            ),
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model,
            measure_callbacks=[*ms.MeasureCallback.create("default"), progress],
            max_in_flight=settings.batches_in_flight,
            first_batch=first_batch if round_index == 0 else None,
        )
        if report.trials == sum(before.values()):
            break  # nothing more to find
        active = [
            task
            for task in active
            if report.tasks[task.name].trials - before[task.name] >= shares[task.name]
        ]
    return report


def _outlook(
    task: TuningTask, outlook: Mapping[str, TaskOutlook] | None, report: TuningReport
) -> TaskOutlook:
    """What the allocation knows of ``task`` now: the given outlook, updated by this run."""
    known = (outlook or {}).get(task.name)
    best = known.best_sec if known is not None else None
    found = report.tasks[task.name].best_sec
    if found is not None and (best is None or found < best):
        best = found
    return TaskOutlook(
        name=task.name,
        weight=task.weight,
        flops=task.flops,
        best_sec=best,
        spent=(known.spent if known is not None else 0) + report.tasks[task.name].trials,
    )


def _warm_start_strategies(
    tasks: list[TuningTask],
    *,
    warm_start: WarmStart,
    database: Database,
    target: Target,
    settings: SearchSettings,
    report: TuningReport,
    pretrained: set[str],
    seed: int | None,
) -> dict[str, SearchStrategy]:
    """A warm-started search for each task with similar records and no record of its own."""
    strategies: dict[str, SearchStrategy] = {}
    for index, task in enumerate(tasks):
        records = _similar_records(task, warm_start=warm_start, database=database, target=target)
        if not records:
            continue
        if not pretrained:
            # No task's own workload may be learnt from as a neighbour: its group in the cost
            # model is for our measurements of it.
            pretrained.update(workload_key(other.mod) for other in tasks)
        figures = WarmStartFigures()
        report.tasks[task.name].warm_start = figures
        strategies[task.name] = WarmStartSearch(
            settings.strategy(),
            records,
            warm_start=warm_start,
            figures=figures,
            pretrained=pretrained,
            seed=None if seed is None else seed + index,
        )
    return strategies


def _similar_records(
    task: TuningTask, *, warm_start: WarmStart, database: Database, target: Target
) -> list[SimilarRecord]:
    try:
        own = database.query_tuning_record(task.mod, target, task.name)
        if own is not None and schedule_origin(own.trace) == TUNED:
            return []  # its own search records seed the search already
        # A default schedule (tuner.default_schedules) is no search: the neighbours' are better.
        return list(warm_start.similar_records(task))
    except Exception:
        logging.getLogger(__name__).warning(
            "no warm start for %s: the similar records could not be read", task.name, exc_info=True
        )
        return []


def _tune_contexts(
    active: list[TuningTask],
    *,
    work_dir: str,
    settings: SearchSettings,
    strategies: dict[str, SearchStrategy],
    seed: int | None,
) -> tuple[list[TuneContext], list[float]]:
    """MetaSchedule's ``extracted_tasks_to_tune_contexts``, with a search strategy per task."""
    extracted = [task.extracted for task in active]
    if not strategies:
        return ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=extracted,
            work_dir=work_dir,
            space=space_generator(active[0].extracted.target, split_k=settings.split_k),
            strategy=settings.strategy(),
            seed=seed,
        )
    contexts: list[TuneContext] = []
    weights: list[float] = []
    loggers = get_loggers_from_work_dir(work_dir, [str(task.task_name) for task in extracted])
    for task, logger, rand_state in zip(
        active, loggers, fork_seed(seed, n=len(active)), strict=True
    ):
        if task.extracted.mod.attrs.get("tirx.is_scheduled", False):
            continue  # as MetaSchedule skips a task that is already scheduled
        contexts.append(
            TuneContext(
                mod=task.extracted.dispatched[0],
                target=task.extracted.target,
                space_generator=space_generator(task.extracted.target, split_k=settings.split_k),
                search_strategy=strategies.get(task.name) or settings.strategy(),
                task_name=task.extracted.task_name,
                logger=logger,
                rand_state=rand_state,
                num_threads=search_threads(),
            ).clone()
        )
        weights.append(task.extracted.weight)
    return contexts, weights
