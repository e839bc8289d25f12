"""MetaSchedule Builder/Runner pair that measures candidates on a ``TrialExecutor``.

It is one combined build-and-run path: the builder only writes each scheduled module as JSON
into a directory of its own (MetaSchedule's ``RemoveBuildArtifact`` deletes the artifact's
directory after the run), and the runner sends build-and-time requests to an executor: the
local warm pool, or the farm's measure workers. A built module never leaves the process that
built it, so nothing is exported or linked per trial.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
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

from tunefarm.tuner.trial import MeasureSettings, TrialRequest
from tunefarm.tuner.trial_executor import TrialExecutor, TrialHandle

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
class _RunnerFuture(PyRunnerFuture):
    def __init__(self, handle: TrialHandle, measured_by: Counter[str]) -> None:
        super().__init__()
        self._handle = handle
        self._measured_by = measured_by
        self._result: RunnerResult | None = None

    def done(self) -> bool:
        return self._result is not None or self._handle.done()

    def result(self) -> RunnerResult:
        if self._result is None:
            trial = self._handle.result()
            self._measured_by[trial.worker or "unknown"] += 1
            self._result = RunnerResult(trial.run_secs, trial.error)
        return self._result


@derived_object
class TrialRunner(PyRunner):
    """Builds and times the candidates written by ``CandidateWriter`` on a ``TrialExecutor``."""

    def __init__(
        self,
        executor: TrialExecutor,
        *,
        settings: MeasureSettings | None = None,
        device_id: int = 0,
    ) -> None:
        super().__init__()
        self.executor = executor
        self.settings = settings or MeasureSettings()
        self.device_id = device_id
        self.measured_by: Counter[str] = Counter()
        """Trials per measuring process, as the results come back."""

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        requests = []
        for runner_input in runner_inputs:
            payload = json.loads(Path(runner_input.artifact_path).read_text())
            requests.append(
                TrialRequest(
                    mod_json=payload["mod"],
                    target_json=payload["target"],
                    args_info=[info.as_json() for info in runner_input.args_info],
                    device_id=self.device_id,
                    settings=self.settings,
                )
            )
        handles = self.executor.submit(requests)
        return [_RunnerFuture(handle, self.measured_by) for handle in handles]
