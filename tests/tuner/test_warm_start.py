"""Warm start from similar records: a conv2d's traces seed and pre-train the search of a conv2d
of another shape. Real TVM, real builds, a real warm pool and a real SQLite database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
import tvm.s_tir.meta_schedule as ms
from sqlalchemy import select
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import TuningRecord
from tvm.s_tir.meta_schedule.runner import RunnerResult
from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate, PySearchStrategy

from tunefarm.tuner.model_analysis import analyse_model
from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
from tunefarm.tuner.sample_models import tiny_cnn
from tunefarm.tuner.search import SearchSettings, TuningReport, tune
from tunefarm.tuner.tasks import TuningTask
from tunefarm.tuner.trial import MeasureSettings
from tunefarm.tuner.warm_pool import WarmPool
from tunefarm.tuner.warm_start import (
    WarmStart,
    WarmStartFigures,
    WarmStartSearch,
    measure_candidates,
    pretrain_cost_model,
    reapply_trace,
    refit_tiles,
    seed_schedules,
)
from tunefarm.tuning_db import SqlDatabase
from tunefarm.tuning_db.schema import TuningRecordRow
from tunefarm.tuning_db.similar_records import SimilarRecord

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})
FAST = MeasureSettings(number=1, repeat=1, min_repeat_ms=0)
# A search small enough for tests: the measurements, not the search, should take the time.
SMALL_SEARCH = SearchSettings(
    population_size=24, init_min_unmeasured=8, genetic_num_iters=1, num_trials_per_iter=8
)
FAKE_SEC = 1e-9
"""A run time nobody could measure: another team's claim."""


@dataclass
class Convs:
    """Two conv2d tasks of other shapes, the same fused operator; A has measured records."""

    a: TuningTask
    b: TuningTask
    pool2d: TuningTask
    dense: TuningTask
    database: SqlDatabase
    records_a: list[TuningRecord]


def _tasks(tmp: Path, *, channels: int, image_size: int) -> dict[str, TuningTask]:
    path = tmp / f"cnn_{channels}_{image_size}.onnx"
    onnx.save(tiny_cnn(channels=channels, image_size=image_size), str(path))
    tasks = analyse_model(path, target=TARGET).tasks
    return {task.name: task for task in tasks}


def _runner_pair(pool: WarmPool, tmp: Path) -> tuple[CandidateWriter, TrialRunner]:
    return CandidateWriter(str(tmp / "candidates")), TrialRunner(pool, settings=FAST)


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    with WarmPool(1, timeout_sec=60) as warm:
        yield warm


@pytest.fixture(scope="module")
def convs(pool: WarmPool, tmp_path_factory: pytest.TempPathFactory) -> Convs:
    tmp = tmp_path_factory.mktemp("warm_start")
    tasks_a = _tasks(tmp, channels=8, image_size=32)
    tasks_b = _tasks(tmp, channels=16, image_size=24)
    database = SqlDatabase(f"sqlite:///{tmp / 'tuning.db'}", target=TARGET)
    a = tasks_a["fused_conv2d_add_relu"]
    builder, runner = _runner_pair(pool, tmp)
    tune(
        [a],
        target=TARGET,
        database=database,
        builder=builder,
        runner=runner,
        total_trials=16,
        settings=SMALL_SEARCH,
        seed=1,
        work_dir=str(tmp / "logs_a"),
    )
    records_a = database.get_top_k(database.commit_workload(a.mod), 16)
    assert len(records_a) >= 8
    return Convs(
        a=a,
        b=tasks_b["fused_conv2d_add_relu"],
        pool2d=tasks_b["max_pool2d"],
        dense=tasks_a["fused_matmul_add1"],
        database=database,
        records_a=records_a,
    )


def _similar(
    convs: Convs,
    records: list[TuningRecord],
    *,
    verified: bool = True,
    team_id: int | None = None,
) -> list[SimilarRecord]:
    key = convs.database.workload_key(convs.a.mod)
    return [
        SimilarRecord(
            record=record,
            workload_key=key,
            distance=1.0,
            target_relation="same",
            mean_run_sec=float(np.mean([float(sec) for sec in record.run_secs])),
            verified=verified,
            team_id=team_id,
        )
        for record in records
    ]


def _postprocs(task: TuningTask) -> list[ms.postproc.Postproc]:
    context = ms.TuneContext(
        task.mod, target=TARGET, space_generator="post-order-apply", task_name=task.name
    )
    return list(context.space_generator.postprocs)


def _run(mod: tvm.ir.IRModule, args: list[np.ndarray]) -> np.ndarray:
    executable = tvm.compile(mod, target=TARGET)
    device = tvm.cpu()
    tensors = [tvm.runtime.tensor(arg, device) for arg in args]
    executable(*tensors)
    return tensors[-1].numpy()


def test_traces_of_one_conv2d_seed_a_conv2d_of_another_shape(convs: Convs) -> None:
    seeds = seed_schedules(
        _similar(convs, convs.records_a),
        convs.b.mod,
        postprocs=_postprocs(convs.b),
        max_seeds=4,
        seed=3,
    )
    assert len(seeds) == 4
    assert len({tvm.ir.save_json(sch.mod) for sch in seeds}) == 4  # distinct
    rng = np.random.default_rng(0)
    infos = ArgInfo.from_prim_func(convs.b.mod["main"])
    args = [rng.standard_normal([int(d) for d in info.shape]).astype("float32") for info in infos]
    expected = _run(convs.b.mod, args)
    for sch in seeds:
        # They are schedules of B, not of A: B's shapes, and B's results.
        assert [info.as_json() for info in ArgInfo.from_prim_func(sch.mod["main"])] == [
            info.as_json() for info in infos
        ]
        np.testing.assert_allclose(_run(sch.mod, args), expected, rtol=1e-4, atol=1e-4)


def test_tile_sizes_that_do_not_fit_the_new_shape_are_refitted() -> None:
    # The inner tiles keep what still divides the new extent; the outermost takes the rest.
    assert refit_tiles([2, 4, 8, 1], 24) == [3, 1, 8, 1]
    assert refit_tiles([1, 1, 1, 16], 24) == [3, 1, 1, 8]
    assert refit_tiles([4, 2, 2, 2], 48) == [6, 2, 2, 2]
    assert refit_tiles([7, 3], 5) == [5, 1]
    assert refit_tiles([1, 64], 128, max_innermost=16) is None


def test_a_trace_that_does_not_apply_is_dropped_without_error(convs: Convs) -> None:
    conv_traces = _similar(convs, convs.records_a[:2])
    # A conv2d's trace names blocks a pooling task does not have.
    assert reapply_trace(convs.records_a[0].trace, convs.pool2d.mod, postprocs=[]) is None
    assert (
        seed_schedules(
            conv_traces, convs.pool2d.mod, postprocs=_postprocs(convs.pool2d), max_seeds=4
        )
        == []
    )
    # A dense layer's trace among a conv2d's: only the conv2d's seeds remain.
    dense_space = ms.TuneContext(
        convs.dense.mod, target=TARGET, space_generator="post-order-apply", task_name="dense"
    ).generate_design_space()
    dense_record = TuningRecord(
        dense_space[0].trace,
        ms.database.Workload(convs.dense.mod),
        [1e-6],
        TARGET,
        ArgInfo.from_prim_func(convs.dense.mod["main"]),
    )
    mixed = [*_similar(convs, [dense_record]), *conv_traces]
    seeds = seed_schedules(mixed, convs.b.mod, postprocs=_postprocs(convs.b), max_seeds=4)
    assert len(seeds) == 2


def test_pretraining_changes_the_cost_model(convs: Convs) -> None:
    postprocs = _postprocs(convs.b)
    seeds = seed_schedules(
        _similar(convs, convs.records_a), convs.b.mod, postprocs=postprocs, max_seeds=8
    )
    context = ms.TuneContext(convs.b.mod, target=TARGET, task_name="b")
    # No warm-up threshold: the stock model predicts at random until 100 samples.
    model = ms.cost_model.XGBModel(num_warmup_samples=0, num_tuning_cores=1)
    assert model.booster is None
    learnt = pretrain_cost_model(
        model, _similar(convs, convs.records_a), target=TARGET, postprocs=postprocs
    )
    assert learnt == len(convs.records_a)
    assert model.data_size == learnt and model.booster is not None
    candidates = measure_candidates(seeds)
    first = model.predict(context, candidates)
    assert np.array_equal(first, model.predict(context, candidates))  # the model, not chance
    assert np.ptp(first) > 0
    # The neighbour's group is its own: the new workload's group is left for our measurements.
    assert len(model.data) == 1


def test_unverified_records_are_not_learnt_from_by_default(convs: Convs) -> None:
    model = ms.cost_model.XGBModel(num_tuning_cores=1)
    claimed = _similar(convs, convs.records_a, verified=False, team_id=5)
    assert pretrain_cost_model(model, claimed, target=TARGET, postprocs=[]) == 0
    assert model.data_size == 0


def _warm_tune(
    convs: Convs,
    pool: WarmPool,
    tmp: Path,
    similar: list[SimilarRecord],
    *,
    trials: int,
    max_trials_per_task: int | None = None,
    first_batch: int = 4,
    on_progress: Callable[[TuningReport], None] | None = None,
) -> tuple[TuningReport, SqlDatabase]:
    database = SqlDatabase(f"sqlite:///{tmp / 'b.db'}", target=TARGET)
    builder, runner = _runner_pair(pool, tmp)
    report = tune(
        [convs.b],
        target=TARGET,
        database=database,
        builder=builder,
        runner=runner,
        total_trials=trials,
        max_trials_per_task=max_trials_per_task,
        settings=SMALL_SEARCH,
        seed=2,
        work_dir=str(tmp / "logs"),
        on_progress=on_progress,
        warm_start=WarmStart(lambda task: similar, max_seeds=4, first_batch=first_batch),
    )
    return report, database


def test_another_teams_seed_is_measured_by_us_before_anything_uses_it(
    convs: Convs, pool: WarmPool, tmp_path: Path
) -> None:
    claimed = [
        TuningRecord(r.trace, r.workload, [FAKE_SEC], TARGET, r.args_info)
        for r in convs.records_a[:6]
    ]
    similar = [
        SimilarRecord(
            record=record,
            workload_key="neighbour",
            distance=1.0,
            target_relation="same",
            mean_run_sec=FAKE_SEC,
            verified=False,
            team_id=5,
        )
        for record in claimed
    ]
    report, database = _warm_tune(convs, pool, tmp_path, similar, trials=12)

    progress = report.tasks[convs.b.name]
    figures = progress.warm_start
    assert figures is not None
    assert figures.offered == 6 and figures.applied == 4
    assert figures.measured + figures.failed == 4
    assert figures.measured >= 1 and figures.best_seed_sec is not None
    assert figures.best_seed_sec > 100 * FAKE_SEC
    assert figures.pretrained_on == 0  # unverified run times train nothing
    # Seeds are trials of the task, inside its budget.
    assert progress.trials == report.trials <= 12
    assert progress.trials >= 4

    with database.engine.connect() as connection:
        rows = connection.execute(select(TuningRecordRow)).all()
    key = database.workload_key(convs.b.mod)
    assert {database.workload_key(r.workload.mod) for r in database.get_all_tuning_records()} == {
        key
    }
    assert 0 < len(rows) <= progress.trials
    for row in rows:
        assert row.verified and row.team_id is None
        assert all(sec > 100 * FAKE_SEC for sec in json.loads(row.run_secs_json))
    best = database.query_tuning_record(convs.b.mod, TARGET, convs.b.name)
    assert best is not None
    assert float(best.run_secs[0]) > 100 * FAKE_SEC


def test_a_failing_similarity_lookup_leaves_the_task_to_the_plain_search(
    convs: Convs, pool: WarmPool, tmp_path: Path
) -> None:
    def broken(task: TuningTask) -> list[SimilarRecord]:
        raise RuntimeError("index down")

    database = SqlDatabase(f"sqlite:///{tmp_path / 'b.db'}", target=TARGET)
    builder, runner = _runner_pair(pool, tmp_path)
    report = tune(
        [convs.b],
        target=TARGET,
        database=database,
        builder=builder,
        runner=runner,
        total_trials=8,
        settings=SMALL_SEARCH,
        seed=2,
        work_dir=str(tmp_path / "logs"),
        warm_start=WarmStart(broken),
    )
    assert report.tasks[convs.b.name].warm_start is None
    assert report.trials == 8


@pytest.mark.parametrize("overlap", [False, True], ids=["metaschedule-loop", "overlapped-loop"])
def test_seeds_are_trials_of_the_task_and_pretraining_happens_first(
    convs: Convs, pool: WarmPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool
) -> None:
    monkeypatch.setenv("TUNEFARM_SEARCH_OVERLAP", "1" if overlap else "0")
    similar = _similar(convs, convs.records_a)
    report, database = _warm_tune(
        convs, pool, tmp_path, similar, trials=100, max_trials_per_task=10
    )
    progress = report.tasks[convs.b.name]
    figures = progress.warm_start
    assert figures is not None
    # Seeds take at most half the task's share; the task never goes past its share.
    assert figures.applied == 4 and figures.measured + figures.failed == 4
    assert progress.trials == report.trials == 10
    assert figures.pretrained_on == len(convs.records_a)
    # The best record of B is one we measured, the seeds among them.
    assert figures.best_seed_sec is not None and progress.best_sec is not None
    assert progress.best_sec <= figures.best_seed_sec
    assert database.best_run_sec(convs.b.mod) == pytest.approx(progress.best_sec)
    # No seed was measured twice (one record per trace, one trial per record).
    assert len(database.get_all_tuning_records()) == progress.trials


def test_the_most_promising_seeds_go_first_and_the_rest_in_the_next_batch(
    convs: Convs, pool: WarmPool, tmp_path: Path
) -> None:
    batches: list[int] = []

    def batch_done(report: TuningReport) -> None:
        batches.append(report.trials - sum(batches))

    report, _ = _warm_tune(
        convs,
        pool,
        tmp_path,
        _similar(convs, convs.records_a),
        trials=12,
        max_trials_per_task=12,
        first_batch=1,
        on_progress=batch_done,
    )
    figures = report.tasks[convs.b.name].warm_start
    assert figures is not None and figures.applied == 4
    assert batches[:2] == [1, 3]  # one seed, then the other three; then the search's own
    assert sum(batches) == report.trials == 12
    assert figures.measured + figures.failed == 4
    assert figures.best_seed_rank is not None and 0 <= figures.best_seed_rank < 4


@derived_object
class WholeBatchSearch(PySearchStrategy):
    """Proposes a whole batch whenever it is asked, whatever its budget: what MetaSchedule's
    evolutionary search does when it is asked again before a result came back (its clamp to
    max_trials is spent by the first ask)."""

    def __init__(self, schedules: list[tvm.s_tir.Schedule]) -> None:
        super().__init__()
        self.schedules = list(schedules)
        self.per_iter = 0

    def _initialize_with_tune_context(self, context: ms.TuneContext) -> None:
        pass

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database, cost_model):  # type: ignore[no-untyped-def]
        self.per_iter = num_trials_per_iter

    def post_tuning(self) -> None:
        pass

    def generate_measure_candidates(self) -> list[MeasureCandidate]:
        repeated = self.schedules * self.per_iter
        return measure_candidates(repeated[: self.per_iter])

    def notify_runner_results(self, candidates, results) -> None:  # type: ignore[no-untyped-def]
        pass

    def clone(self) -> WholeBatchSearch:
        return WholeBatchSearch(self.schedules)


def test_the_search_after_the_seeds_never_passes_the_tasks_share(convs: Convs) -> None:
    # CI once saw 16 trials in a share of 10: a batch of 6 less a seed it proposed again, then
    # a retry asked the evolutionary search again before any result and got a whole batch.
    context = ms.TuneContext(
        convs.b.mod, target=TARGET, space_generator="post-order-apply", task_name=convs.b.name
    )
    figures = WarmStartFigures()
    search = WarmStartSearch(
        WholeBatchSearch(context.generate_design_space()),
        _similar(convs, convs.records_a),
        warm_start=WarmStart(lambda task: [], max_seeds=4),
        figures=figures,
        pretrained=set(),
        seed=2,
    )
    search._initialize_with_tune_context(context)
    search.pre_tuning(10, 8, [], None, None)
    sent: list[int] = []
    for _ in range(10):
        batch = search.generate_measure_candidates()
        if batch is None:
            break
        sent.append(len(batch))
        search.notify_runner_results(batch, [RunnerResult([1e-3], None) for _ in batch])
    assert figures.applied == 4 and sent[0] == 4  # the seeds, then the search's own
    assert sum(sent) == 10, sent
