"""MetaSchedule Builder/Runner pair that measures candidates in a ``WarmPool``.

It is one combined build-and-run path: the builder only writes each scheduled module as JSON
into a directory of its own (MetaSchedule's ``RemoveBuildArtifact`` deletes the artifact's
directory after the run), and the runner sends build-and-time requests to the warm pool. A built
module never leaves the process that built it, so nothing is exported or linked per trial.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import (
    PyRunner,
    PyRunnerFuture,
    RunnerFuture,
    RunnerInput,
    RunnerResult,
)

from tuner.trial import MeasureSettings, TrialRequest, TrialResult
from tuner.warm_pool import WarmPool

CANDIDATE_FILE = "candidate.json"


@derived_object
class CandidateWriter(PyBuilder):
    """Writes each candidate to ``<artifact_root>/<n>/candidate.json``; building happens later."""

    def __init__(self, artifact_root: str | None = None) -> None:
        super().__init__()
        self.artifact_root = Path(artifact_root or tempfile.mkdtemp(prefix="tunefarm-cand-"))
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        results = []
        for build_input in build_inputs:
            self._count += 1
            # One directory per artifact: RemoveBuildArtifact deletes the artifact's directory.
            directory = self.artifact_root / f"{self._count:08d}"
            directory.mkdir()
            path = directory / CANDIDATE_FILE
            payload = {
                "mod": tvm.ir.save_json(build_input.mod),
                "target": str(build_input.target),
            }
            path.write_text(json.dumps(payload))
            results.append(BuilderResult(str(path), None))
        return results


@derived_object
class _PendingTrial(PyRunnerFuture):
    def __init__(self, runner: PoolRunner, request: TrialRequest) -> None:
        super().__init__()
        self._runner = runner
        self._request = request
        self._generation = runner.pool.generation
        self._future = runner.pool.submit(request)
        self._submitted = time.monotonic()
        self._result: RunnerResult | None = None

    def done(self) -> bool:
        return self._result is not None or self._future.done()

    def result(self) -> RunnerResult:
        if self._result is None:
            self._result = self._wait()
        return self._result

    def _wait(self) -> RunnerResult:
        timeout = self._runner.timeout_sec
        for attempt in range(2):
            remaining = max(0.0, timeout - (time.monotonic() - self._submitted))
            try:
                trial: TrialResult = self._future.result(timeout=remaining)
                return RunnerResult(trial.run_secs, trial.error)
            except FutureTimeout:
                self._runner.pool.restart(self._generation)
                return RunnerResult(None, f"timed out after {timeout:.0f} s (build + run)")
            except (BrokenProcessPool, CancelledError):
                # This candidate, or another one, killed the worker, or a restart cancelled us:
                # try once more on a fresh pool.
                self._runner.pool.restart(self._generation)
                if attempt == 1:
                    return RunnerResult(None, "the measuring process died on this candidate")
                self._generation = self._runner.pool.generation
                self._future = self._runner.pool.submit(self._request)
                self._submitted = time.monotonic()
        return RunnerResult(None, "unreachable")


@derived_object
class PoolRunner(PyRunner):
    """Builds and times the candidates written by ``CandidateWriter`` in a ``WarmPool``."""

    def __init__(
        self,
        pool: WarmPool,
        *,
        settings: MeasureSettings | None = None,
        timeout_sec: float = 60.0,
        device_id: int = 0,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.settings = settings or MeasureSettings()
        self.timeout_sec = timeout_sec
        self.device_id = device_id

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        futures: list[RunnerFuture] = []
        for runner_input in runner_inputs:
            payload = json.loads(Path(runner_input.artifact_path).read_text())
            request = TrialRequest(
                mod_json=payload["mod"],
                target_json=payload["target"],
                args_info=[info.as_json() for info in runner_input.args_info],
                device_id=self.device_id,
                settings=self.settings,
            )
            futures.append(_PendingTrial(self, request))
        return futures
