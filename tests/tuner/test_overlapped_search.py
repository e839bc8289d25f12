"""The overlapped search loop: real search, real warm-pool measurements, a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tvm
import tvm.s_tir.meta_schedule as ms
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.space_generator import PySpaceGenerator

from tests.tuning_db.workloads import matmul
from tunefarm.tuner import overlapped_search
from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
from tunefarm.tuner.search import ProgressCallback, TaskProgress, TuningReport
from tunefarm.tuner.trial import MeasureSettings
from tunefarm.tuner.warm_pool import WarmPool
from tunefarm.tuning_db import SqlDatabase

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})
FAST = MeasureSettings(number=1, repeat=1, min_repeat_ms=0)


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    with WarmPool(1, timeout_sec=60) as warm:
        yield warm


@derived_object
class _BrokenSpace(PySpaceGenerator):
    """A design space that always raises, as a tensor-core rule's tiling sometimes does."""

    def __init__(self) -> None:
        super().__init__()
        self.sch_rules: list[ms.ScheduleRule] = []
        self.postprocs: list[ms.Postproc] = []
        self.mutator_probs: dict[ms.Mutator, float] = {}

    def _initialize_with_tune_context(self, context: ms.TuneContext) -> None:
        pass

    def generate_design_space(self, mod: IRModule) -> list[Schedule]:
        raise ValueError("ScheduleError\nError message: The scope root is not a stage pipeline.")

    def clone(self) -> _BrokenSpace:
        return _BrokenSpace()


def _context(n: int, seed: int, *, broken: bool = False) -> ms.TuneContext:
    return ms.TuneContext(
        matmul(n),
        target=TARGET,
        space_generator=_BrokenSpace() if broken else "post-order-apply",
        search_strategy=ms.search_strategy.EvolutionarySearch(
            population_size=16, init_min_unmeasured=4, genetic_num_iters=1
        ),
        task_name=f"matmul_{n}",
        rand_state=seed,
        num_threads=1,
    )


def _tune(
    pool: WarmPool,
    tmp_path: Path,
    *,
    sizes: list[int],
    total: int,
    per_task: int,
    per_iter: int,
    stop_after: int | None = None,
    broken: frozenset[int] = frozenset(),
    first_batch: int | None = None,
    counts: list[int] | None = None,
) -> tuple[TuningReport, SqlDatabase]:
    database = SqlDatabase(f"sqlite:///{tmp_path / 'tuning.db'}", target=TARGET)
    contexts = [_context(n, seed=i + 1, broken=n in broken) for i, n in enumerate(sizes)]
    names = [str(ctx.task_name) for ctx in contexts]
    report = TuningReport(tasks={name: TaskProgress(name) for name in names})

    def listener(progress: TuningReport) -> None:
        if counts is not None:
            counts.append(progress.trials)
        if stop_after is not None and progress.trials >= stop_after:
            raise RuntimeError("stopped")

    overlapped_search.tune_tasks(
        tasks=contexts,
        task_weights=[1.0] * len(contexts),
        max_trials_global=total,
        max_trials_per_task=per_task,
        num_trials_per_iter=per_iter,
        builder=CandidateWriter(str(tmp_path / "candidates")),
        runner=TrialRunner(pool, settings=FAST),
        database=database,
        cost_model=ms.CostModel.create("xgb", num_tuning_cores=1),
        measure_callbacks=[
            *ms.MeasureCallback.create("default"),
            ProgressCallback(names, report, listener),
        ],
        overlap=True,
        seed=1,
        first_batch=first_batch,
    )
    return report, database


def _records(database: SqlDatabase) -> list[tuple[str, str]]:
    return [
        (str(record.workload.mod["main"].body), str(record.trace))
        for record in database.get_all_tuning_records()
    ]


def test_every_sent_candidate_is_recorded_once_within_budget(
    pool: WarmPool, tmp_path: Path
) -> None:
    report, database = _tune(pool, tmp_path, sizes=[32, 48], total=20, per_task=12, per_iter=8)
    stats = overlapped_search.last_stats
    # Round robin gives each task a batch of 8; then only 4 of a task's 12 are left, and
    # a batch searched ahead is cut to that.
    assert report.trials == stats.trials == 20
    assert all(task.trials <= 12 for task in report.tasks.values())
    records = _records(database)
    assert len(records) == 20
    assert len(set(records)) == 20  # no candidate measured twice
    assert stats.overlapped_batches >= 1  # a batch was searched while another was out
    assert report.failures == 0


def test_a_callback_that_raises_ends_the_loop_and_drops_batches_still_out(
    pool: WarmPool, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="stopped"):
        _tune(pool, tmp_path, sizes=[32], total=64, per_task=64, per_iter=4, stop_after=4)
    report_trials = overlapped_search.last_stats.trials
    # The first batch was recorded; the one searched ahead was dropped, not recorded.
    assert report_trials <= 8
    database = SqlDatabase(f"sqlite:///{tmp_path / 'tuning.db'}", target=TARGET)
    assert len(_records(database)) == 4


def test_the_first_batch_leaves_before_the_other_tasks_are_prepared(
    pool: WarmPool, tmp_path: Path
) -> None:
    report, database = _tune(pool, tmp_path, sizes=[32, 48, 64], total=24, per_task=8, per_iter=8)
    stats = overlapped_search.last_stats
    # Issue 16: only the first task's design space and search were made before its batch
    # went out; the others were prepared later, while batches were out or when picked.
    assert stats.prepared_before_first_batch == 1
    assert stats.first_batch_sent_sec is not None
    assert stats.prepare_sec > 0
    assert {name: task.trials for name, task in report.tasks.items()} == {
        "matmul_32": 8,
        "matmul_48": 8,
        "matmul_64": 8,
    }
    assert len(_records(database)) == 24


def test_a_task_whose_design_space_raises_is_dropped_and_the_others_go_on(
    pool: WarmPool, tmp_path: Path
) -> None:
    # Seen on the H200: one ResNet-50 task's tensor-core tiling raised a ScheduleError, and
    # the whole farm job failed with an internal error.
    report, database = _tune(
        pool, tmp_path, sizes=[32, 40, 48], total=16, per_task=8, per_iter=8, broken=frozenset({40})
    )
    stats = overlapped_search.last_stats
    assert stats.failed_tasks == {
        "matmul_40": "ValueError: The scope root is not a stage pipeline."
    }
    assert {name: task.trials for name, task in report.tasks.items()} == {
        "matmul_32": 8,
        "matmul_40": 0,
        "matmul_48": 8,
    }
    assert len(_records(database)) == 16


def test_the_first_batch_goes_out_in_two_parts_the_first_one_pools_worth(
    pool: WarmPool, tmp_path: Path
) -> None:
    counts: list[int] = []
    report, database = _tune(
        pool, tmp_path, sizes=[32], total=12, per_task=12, per_iter=8, first_batch=3, counts=counts
    )
    stats = overlapped_search.last_stats
    # 8 candidates searched: 3 (one round of the pool's builds), then 5; then the last 4.
    assert stats.batches == 3
    assert report.trials == stats.trials == 12
    assert len(set(_records(database))) == 12
    assert counts[0] == 3  # the first results reported are the first part's
