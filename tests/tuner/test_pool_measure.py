"""The warm pool builds and times real candidates; failures come back as data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.s_tir.meta_schedule.runner import RunnerInput

from tests.fixtures.bad_candidates import args_info, crashing, hanging
from tests.tuning_db.workloads import matmul
from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
from tunefarm.tuner.trial import MeasureSettings, TrialRequest, run_trial
from tunefarm.tuner.warm_pool import WarmPool

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})
FAST = MeasureSettings(number=2, repeat=2, min_repeat_ms=1)


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    with WarmPool(1, timeout_sec=60) as warm:
        yield warm


def _measure(pool: WarmPool, mods: list[tvm.ir.IRModule], tmp_path: Path) -> list:  # type: ignore[type-arg]
    writer = CandidateWriter(str(tmp_path / "candidates"))
    runner = TrialRunner(pool, settings=FAST)
    built = writer.build([BuilderInput(mod, TARGET) for mod in mods])
    inputs = [
        RunnerInput(result.artifact_path, "llvm", ArgInfo.from_prim_func(matmul()["main"]))
        for result in built
    ]
    return [future.result() for future in runner.run(inputs)]


def test_candidates_are_timed(pool: WarmPool, tmp_path: Path) -> None:
    (result,) = _measure(pool, [matmul()], tmp_path)
    assert result.error_msg is None
    assert len(result.run_secs) == 2
    assert all(0 < float(sec) < 1 for sec in result.run_secs)


def test_each_artifact_has_a_directory_of_its_own(tmp_path: Path) -> None:
    writer = CandidateWriter(str(tmp_path / "candidates"))
    paths = [Path(r.artifact_path) for r in writer.build([BuilderInput(matmul(), TARGET)] * 3)]
    assert len({path.parent for path in paths}) == 3
    assert all(path.parent.parent == tmp_path / "candidates" for path in paths)


def test_a_bad_candidate_is_data_not_an_exception() -> None:
    bad = run_trial(TrialRequest(mod_json="{not json", target_json=str(TARGET), args_info=[]))
    assert bad.run_secs is None
    assert bad.error is not None and bad.error.startswith("build failed")


def test_a_restart_mid_batch_retries_the_candidates(pool: WarmPool, tmp_path: Path) -> None:
    writer = CandidateWriter(str(tmp_path / "candidates"))
    runner = TrialRunner(pool, settings=FAST)
    built = writer.build([BuilderInput(matmul(), TARGET)] * 2)
    args = ArgInfo.from_prim_func(matmul()["main"])
    futures = runner.run([RunnerInput(r.artifact_path, "llvm", args) for r in built])
    restarts = pool.restarts
    pool.restart()  # as if another candidate had hung and the pool was killed
    results = [future.result() for future in futures]
    assert pool.restarts == restarts + 1
    assert all(result.error_msg is None for result in results), [r.error_msg for r in results]


def test_a_crashing_or_hanging_candidate_is_an_error_and_the_pool_goes_on() -> None:
    def request(mod: tvm.ir.IRModule) -> TrialRequest:
        return TrialRequest(
            mod_json=tvm.ir.save_json(mod), target_json=str(TARGET), args_info=args_info()
        )

    good = TrialRequest(
        mod_json=tvm.ir.save_json(matmul()),
        target_json=str(TARGET),
        args_info=[info.as_json() for info in ArgInfo.from_prim_func(matmul()["main"])],
        settings=FAST,
    )
    with WarmPool(1, timeout_sec=3) as pool:
        results = [h.result() for h in pool.submit([request(crashing()), good, request(hanging())])]
        after = pool.submit([good])[0].result()
    assert results[0].error == "the measuring process died on this candidate"
    assert results[1].error is None and results[1].run_secs
    assert results[2].error is not None and results[2].error.startswith("timed out after 3 s")
    assert after.error is None and after.run_secs
