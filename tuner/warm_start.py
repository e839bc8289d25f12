"""Warm start of a task that has no record of its own, from records of similar workloads.

The similarity index (``SqlDatabase.similar_records``) hands over measured records of
neighbouring workloads: the same operator with other shapes, or the same workload measured
elsewhere. They are used in two ways, and only ever as proposals:

1. **Seeds.** Each record's trace is re-applied to the new workload. Decisions that do not fit
   the new shapes are refitted or re-sampled, the task's postprocessors run, and what applies
   becomes the task's first batch of candidates. Our own builder and runner measure that batch
   like any other, and MetaSchedule's ``AddToDatabase`` files the results as our measurements,
   so the evolutionary search then starts from them (it takes its initial population from the
   database's best records). A neighbour's claimed run time never becomes a record of the new
   workload.
2. **Pre-training.** Before the first trial, the shared XGBoost cost model learns from the
   neighbours' measurements: features of each record's schedule on its own workload, labels its
   run time, normalized per workload as MetaSchedule does.

Everything here is best effort: a record that does not apply is dropped and logged at debug
level; nothing raises into the job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tvm_ffi
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import Schedule, Trace
from tvm.s_tir.meta_schedule import TuneContext
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.cost_model import CostModel
from tvm.s_tir.meta_schedule.database import Database
from tvm.s_tir.meta_schedule.postproc import Postproc
from tvm.s_tir.meta_schedule.runner import RunnerResult
from tvm.s_tir.meta_schedule.search_strategy import (
    MeasureCandidate,
    PySearchStrategy,
    SearchStrategy,
)
from tvm.s_tir.schedule import Instruction
from tvm.target import Target

from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuning_db.similar_records import SimilarRecord
from tunefarm.tuning_db.sql_database import FAILED_RUN_SEC
from tunefarm.tuning_db.workload_key import workload_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    """How ``tune`` warm-starts a task that has no record of its own."""

    similar_records: Callable[[TuningTask], Sequence[SimilarRecord]]
    """The nearest records of a task's workload, e.g. ``database.similar_records(task.mod)``."""
    max_seeds: int = 16
    """Re-applied traces measured first, at most; they count against the task's trials."""
    max_seed_fraction: float = 0.5
    """Of the task's trials, the most that go to seeds; the search gets the rest."""
    first_batch: int = 4
    """Seeds in a task's first batch: the nearest neighbours' fastest schedules. The rest follow
    in the task's next batch. A small first batch puts a measured kernel on every task after a
    few trials each, so the whole model has a latency estimate, and a schedule to build, early.
    (In bench/reuse.py the best seed of 8 of 9 tasks was among the first four; ranking them by
    the pre-trained cost model instead put it no earlier.)"""
    max_pretrain_records: int = 512
    """Neighbour records the cost model learns from, at most, per task."""
    pretrain_on_unverified: bool = False
    """Train on run times nobody here measured (another team's import)? A fake record would skew
    the model; it could not win a build, but it could steer the search away from good schedules."""
    attempts: int = 3
    """Tries per record: its decisions refitted to the new shapes, then re-sampled."""


@dataclass
class WarmStartFigures:
    """What the warm start of one task did."""

    offered: int = 0
    """Similar records the index offered."""
    applied: int = 0
    """Distinct candidates their traces gave on the new workload."""
    measured: int = 0
    """Seeded candidates our runner measured without error."""
    failed: int = 0
    """Seeded candidates that failed to build or run."""
    best_seed_sec: float | None = None
    """Best mean run time among the seeded candidates, as we measured it."""
    best_seed_rank: int | None = None
    """Where the best seed stood in the order the seeds were sent (0: first)."""
    pretrained_on: int = 0
    """Neighbour records the cost model was pre-trained on for this task (a neighbour shared
    with a task warm-started before it is learnt only once, there)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "applied": self.applied,
            "measured": self.measured,
            "failed": self.failed,
            "best_seed_latency_us": (
                round(self.best_seed_sec * 1e6, 3) if self.best_seed_sec is not None else None
            ),
            "best_seed_rank": self.best_seed_rank,
            "pretrained_on": self.pretrained_on,
        }


# -- re-applying a trace ------------------------------------------------------------------------


def reapply_trace(
    trace: Trace,
    mod: IRModule,
    *,
    postprocs: Sequence[Postproc],
    seed: int | None = None,
    attempts: int = 3,
) -> Schedule | None:
    """The schedule that ``trace`` (recorded on another workload) gives on ``mod``, or None.

    The first attempt refits tile sizes that do not divide the new extents (keeping the inner
    tiles where they still divide); later attempts re-sample every decision that does not fit.
    A schedule the postprocessors reject counts as a failed attempt.
    """
    for attempt in range(max(1, attempts)):
        refit = attempt == 0
        try:
            sch = Schedule(
                mod,
                seed=None if seed is None else _schedule_seed(seed + attempt),
                debug_mask=0,
                error_render_level="none",
            )
            trace.apply_to_schedule(
                sch,
                remove_postproc=True,
                decision_provider=lambda inst, inputs, attrs, decision, sch=sch, refit=refit: (
                    _fit_decision(sch, inst, inputs, attrs, decision, refit=refit)
                ),
            )
            sch.enter_postproc()
            rejected = next((p for p in postprocs if not p.apply(sch)), None)
        except Exception as err:  # a trace of another operator, a block that is not there, ...
            logger.debug("trace does not apply (attempt %d): %s", attempt, _first_line(err))
            continue
        if rejected is not None:
            logger.debug("postprocessor %s rejects the schedule (attempt %d)", rejected, attempt)
            continue
        return sch
    return None


def _schedule_seed(seed: int) -> int:
    return seed % (2**31 - 2) + 1  # a schedule's seed lies in [1, 2**31 - 1]


def _fit_decision(
    sch: Schedule, inst: Instruction, inputs: Any, attrs: Any, decision: Any, *, refit: bool
) -> Any:
    """The decision to replay on the new workload; None makes the instruction sample afresh."""
    if decision is None:
        return None
    kind = inst.kind.name
    if kind == "SamplePerfectTile":
        extent = _loop_extent(sch, inputs[0])
        factors = [int(factor) for factor in decision]
        if extent is None or math.prod(factors) == extent:
            return decision
        if not refit:
            return None
        max_innermost = int(attrs[1]) if len(attrs) > 1 else -1
        return refit_tiles(factors, extent, max_innermost=max_innermost)
    if kind == "SampleCategorical":
        return decision if 0 <= int(decision) < len(attrs[0]) else None
    # SampleComputeLocation repairs a location that is gone by itself; others replay as they are.
    return decision


def refit_tiles(factors: list[int], extent: int, *, max_innermost: int = -1) -> list[int] | None:
    """Perfect tiles of ``extent`` as close to ``factors`` as divisibility allows.

    From the innermost tile out, each keeps the largest part of its old size that divides what is
    left; the outermost takes the rest. (TVM's own repair gives a tile that does not divide the
    whole remaining length, which can break the innermost-factor limit.)
    """
    left = extent
    fitted = [0] * len(factors)
    for i in range(len(factors) - 1, 0, -1):
        fitted[i] = math.gcd(max(1, factors[i]), left)
        left //= fitted[i]
    fitted[0] = left
    if max_innermost > 0 and fitted[-1] > max_innermost:
        return None
    return fitted


def _loop_extent(sch: Schedule, loop_rv: Any) -> int | None:
    try:
        extent = sch.get(loop_rv).extent
    except Exception:
        return None
    return int(extent.value) if hasattr(extent, "value") else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


# -- seeds --------------------------------------------------------------------------------------


def _usable_for_seeds(record: SimilarRecord) -> bool:
    return 0.0 < record.mean_run_sec < FAILED_RUN_SEC


def seed_schedules(
    records: Sequence[SimilarRecord],
    mod: IRModule,
    *,
    postprocs: Sequence[Postproc],
    max_seeds: int,
    attempts: int = 3,
    seed: int | None = None,
) -> list[Schedule]:
    """Up to ``max_seeds`` distinct schedules of ``mod`` from the records' traces.

    Nearest records first, the fastest first among equally near ones. Two records that give the
    same module (structurally) give one seed.
    """
    ranked = sorted(
        (record for record in records if _usable_for_seeds(record)),
        key=lambda record: (record.distance, record.mean_run_sec),
    )
    seeds: list[Schedule] = []
    seen = _ModuleSet()
    for index, record in enumerate(ranked):
        if len(seeds) >= max_seeds:
            break
        try:
            trace = record.record.trace
        except Exception as err:
            logger.debug("record of %s has no usable trace: %s", record.workload_key, err)
            continue
        sch = reapply_trace(
            trace,
            mod,
            postprocs=postprocs,
            seed=None if seed is None else seed + 7919 * index,
            attempts=attempts,
        )
        if sch is None:
            logger.debug("dropped a seed from %s: its trace does not apply", record.workload_key)
            continue
        if seen.add(sch.mod):
            seeds.append(sch)
    return seeds


def measure_candidates(schedules: Sequence[Schedule]) -> list[MeasureCandidate]:
    """Schedules as MetaSchedule measure candidates (as ``AssembleCandidates`` makes them)."""
    return [
        MeasureCandidate(sch, ArgInfo.from_entry_func(sch.mod, remove_preproc=True))
        for sch in schedules
    ]


class _ModuleSet:
    """Modules by structure: ``add`` says whether the module was new."""

    def __init__(self) -> None:
        self._by_hash: dict[int, list[IRModule]] = {}

    def add(self, mod: IRModule) -> bool:
        if mod in self:
            return False
        self._by_hash.setdefault(tvm_ffi.structural_hash(mod), []).append(mod)
        return True

    def __contains__(self, mod: object) -> bool:
        if not self._by_hash:  # no seeds: spare the structural hash of every candidate
            return False
        bucket = self._by_hash.get(tvm_ffi.structural_hash(mod), [])
        return any(tvm_ffi.structural_equal(known, mod) for known in bucket)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._by_hash.values())


# -- pre-training -------------------------------------------------------------------------------


def pretrain_cost_model(
    cost_model: CostModel,
    records: Sequence[SimilarRecord],
    *,
    target: Target,
    postprocs: Sequence[Postproc],
    skip_workloads: set[str] | None = None,
    max_records: int = 512,
    include_unverified: bool = False,
) -> int:
    """Train ``cost_model`` on the records' own measurements; return how many it learnt from.

    Each record's trace is replayed on its *own* workload, so features and run time describe the
    same schedule. Records are grouped per workload, one ``update`` per group: the XGBoost model
    normalizes run times within a group (best / each), so neighbours of other sizes do not skew
    each other, nor the new workload's own group. Workloads in ``skip_workloads`` (already
    learnt, or the task's own) are left out, and are added to it.
    """
    skip = skip_workloads if skip_workloads is not None else set()
    groups: dict[str, list[SimilarRecord]] = {}
    for record in sorted(records, key=lambda record: record.distance):
        if record.workload_key in skip or not _usable_for_seeds(record):
            continue
        if not record.verified and not include_unverified:
            continue
        groups.setdefault(record.workload_key, []).append(record)
    used = 0
    for key, group in groups.items():
        group = group[: max(0, max_records - used)]
        if not group:
            break
        skip.add(key)
        try:
            mod = group[0].record.workload.mod
            context = TuneContext(mod=mod, target=target, task_name=f"warm-start {key[:12]}")
        except Exception as err:
            logger.debug("cannot pre-train on %s: %s", key, _first_line(err))
            continue
        schedules: list[Schedule] = []
        results: list[RunnerResult] = []
        for record in group:
            sch = reapply_trace(record.record.trace, mod, postprocs=postprocs, attempts=1)
            if sch is None:
                continue
            schedules.append(sch)
            results.append(RunnerResult([record.mean_run_sec], None))
        if not schedules:
            continue
        try:
            cost_model.update(context, measure_candidates(schedules), results)
        except Exception as err:
            logger.debug("pre-training on %s failed: %s", key, _first_line(err))
            continue
        used += len(schedules)
    return used


# -- the search strategy ------------------------------------------------------------------------


@derived_object
class WarmStartSearch(PySearchStrategy):
    """A search strategy that measures seeds first, then hands over to ``inner``.

    ``pre_tuning`` pre-trains the cost model and re-applies the seeds. The first batches of
    candidates are the seeds, the most promising few first (``WarmStart.first_batch``); the task
    scheduler builds, runs and records them like any batch, counting them as trials of the task.
    ``inner`` (MetaSchedule's evolutionary search) gets the rest of the task's trials, finds the
    measured seeds in the database as its initial population, and never sends a seed again (it
    does not know which records were measured in this run: evolutionary_search.cc keeps a TODO
    about it).
    """

    def __init__(
        self,
        inner: SearchStrategy,
        records: Sequence[SimilarRecord],
        *,
        warm_start: WarmStart,
        figures: WarmStartFigures,
        pretrained: set[str],
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.records = list(records)
        self.warm_start = warm_start
        self.figures = figures
        self.pretrained = pretrained
        """Neighbour workloads the shared cost model has already learnt (across tasks)."""
        self.seed = seed
        self._context: TuneContext | None = None
        self._pending: list[list[MeasureCandidate]] = []
        self._seeds = _ModuleSet()
        self._sent: list[MeasureCandidate] = []
        """The seeds as sent, in order. Known by identity: the overlapped loop
        (tuner.overlapped_search) may search and send the next batch before this one's results
        come back."""
        self._inner_room = 0
        """Trials of the task left to the inner search: its share less the seeds."""

    def _initialize_with_tune_context(self, context: TuneContext) -> None:
        self._context = context
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(
        self,
        max_trials: int,
        num_trials_per_iter: int,
        design_spaces: list[Schedule],
        database: Database | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        seeds = measure_candidates(self._prepare(max_trials, cost_model))
        first = max(1, self.warm_start.first_batch)
        self._pending = [batch for batch in (seeds[:first], seeds[first:]) if batch]
        self._sent = []
        for candidate in seeds:
            self._seeds.add(candidate.sch.mod)
        self._inner_room = max(0, max_trials - len(seeds))
        self.inner.pre_tuning(
            self._inner_room, num_trials_per_iter, design_spaces, database, cost_model
        )

    def _prepare(self, max_trials: int, cost_model: CostModel | None) -> list[Schedule]:
        """Pre-train and re-apply; any failure leaves the task to the plain search."""
        context = self._context
        assert context is not None and context.mod is not None
        try:
            postprocs = list(context.space_generator.postprocs)
            self.figures.offered = len(self.records)
            own_key = _workload_key(context.mod)
            if cost_model is not None:
                self.pretrained.add(own_key)  # its group is for our own measurements
                self.figures.pretrained_on = pretrain_cost_model(
                    cost_model,
                    self.records,
                    target=context.target,
                    postprocs=postprocs,
                    skip_workloads=self.pretrained,
                    max_records=self.warm_start.max_pretrain_records,
                    include_unverified=self.warm_start.pretrain_on_unverified,
                )
            seeds = seed_schedules(
                self.records,
                context.mod,
                postprocs=postprocs,
                max_seeds=self._seed_limit(max_trials),
                attempts=self.warm_start.attempts,
                seed=self.seed,
            )
        except Exception as err:
            logger.debug("warm start of %s failed: %s", context.task_name, _first_line(err))
            return []
        self.figures.applied = len(seeds)
        return seeds

    def _seed_limit(self, max_trials: int) -> int:
        by_fraction = int(max_trials * self.warm_start.max_seed_fraction)
        return max(0, min(self.warm_start.max_seeds, max(1, by_fraction), max_trials))

    def post_tuning(self) -> None:
        self._pending = []
        self.inner.post_tuning()

    def generate_measure_candidates(self) -> list[MeasureCandidate] | None:
        if self._pending:
            batch = self._pending.pop(0)
            self._sent.extend(batch)
            return list(batch)
        if self._inner_room <= 0:
            return None
        # The evolutionary search may propose a seed again: it sees the seeds in the database
        # but not among the schedules it measured itself. Skip those (a few tries, since each
        # seed can come back at most once: the search remembers what it proposed).
        for _ in range(1 + len(self._seeds)):
            batch = self.inner.generate_measure_candidates()
            if batch is None:
                return None
            fresh = [candidate for candidate in batch if candidate.sch.mod not in self._seeds]
            if len(fresh) < len(batch):
                logger.debug("skipped %d seed(s) proposed again", len(batch) - len(fresh))
            if fresh or len(batch) == 0:
                # The room is counted here, not left to the inner search: asked again before
                # any result came back (a retry above, or the overlapped loop), its clamp to
                # max_trials is already spent and it proposes a whole batch
                # (evolutionary_search.cc, GenerateMeasureCandidates).
                fresh = fresh[: self._inner_room]
                self._inner_room -= len(fresh)
                return fresh
        return None

    def notify_runner_results(
        self, measure_candidates: list[MeasureCandidate], results: list[RunnerResult]
    ) -> None:
        if self._is_seed_batch(measure_candidates):
            self._count_seed_results(measure_candidates, results)
            return  # the inner search did not propose them: its trial count stays its own
        self.inner.notify_runner_results(measure_candidates, results)

    def _seed_rank(self, candidate: MeasureCandidate) -> int | None:
        return next((i for i, seed in enumerate(self._sent) if candidate.same_as(seed)), None)

    def _is_seed_batch(self, candidates: list[MeasureCandidate]) -> bool:
        # A loop may send only part of a batch (the budget's room): compare the first.
        return len(candidates) > 0 and self._seed_rank(candidates[0]) is not None

    def _count_seed_results(
        self, candidates: list[MeasureCandidate], results: list[RunnerResult]
    ) -> None:
        for candidate, result in zip(candidates, results, strict=True):
            secs = [float(sec) for sec in result.run_secs] if result.run_secs else []
            if result.error_msg is not None or not secs or max(secs) >= FAILED_RUN_SEC:
                self.figures.failed += 1
                continue
            self.figures.measured += 1
            mean = sum(secs) / len(secs)
            if self.figures.best_seed_sec is None or mean < self.figures.best_seed_sec:
                self.figures.best_seed_sec = mean
                self.figures.best_seed_rank = self._seed_rank(candidate)

    def clone(self) -> SearchStrategy:
        return WarmStartSearch(
            self.inner.clone(),
            self.records,
            warm_start=self.warm_start,
            figures=self.figures,
            pretrained=self.pretrained,
            seed=self.seed,
        )


def _workload_key(mod: IRModule) -> str:
    # The database's key: a neighbour with this key is the task's own workload.
    return workload_key(mod)
