"""The options of a compile, and their check: one shape for the CLI, the Python API and jobs.

Apart from ``compile_job`` so that ``coverage_plan`` (``tunefarm plan``) can check the same
options without importing the compile job, which imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tvm.target import Target

from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.pipelines import Layout
from tunefarm.tuner.search import SearchSettings, configured_search
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.trial import MeasureSettings


@dataclass
class CompileOptions:
    model_path: Path
    target: str
    out_dir: Path
    database_url: str
    trials: int
    max_trials_per_task: int | None = None
    layout: Layout = "auto"
    fp16: bool = False
    cuda_graph: bool | None = None
    """Replay the model as one CUDA graph; ``None`` means on for CUDA targets."""
    seed: int | None = None
    warm_start: bool = True
    """Seed the search of a task with no record from the records of similar workloads."""
    workers: int | None = None
    search: SearchSettings = field(default_factory=configured_search)
    """The search's knobs; by default ``FAST_SEARCH`` as ``Settings`` adjusts it."""
    measure: MeasureSettings | None = None
    """How candidates are timed; ``None``: the target's default (``measure_settings_for``)."""
    measure_timeout_sec: float = 60.0
    max_model_bytes: int = 2 * 1024**3
    latency_samples: int = 50
    """At most this many samples per whole-model timing (each time-boxed, see ``TimeBox``)."""
    latency_budget_sec: float = 2.0
    """Time a whole-model timing may take once it has its minimum of samples."""
    baseline: bool = True
    """Report the untuned baseline (measured once per model, target and pipeline, then read
    from the database); ``--no-baseline`` skips it."""
    verbose: bool = False
    """Let MetaSchedule log its task table and every iteration."""
    prior_trials: dict[str, int] = field(default_factory=dict)
    """Trials per task that an earlier, interrupted run of the same job already measured. Those
    tasks are tuned on, from their records, with what is left of ``trials``."""

    @property
    def trials_left(self) -> int:
        return max(0, self.trials - sum(self.prior_trials.values()))


def check_options(options: CompileOptions) -> Target:
    """Reject bad options before any work or any database write; return the parsed target."""
    if options.trials < 0:
        raise UserInputError(f"--trials must be 0 or more, not {options.trials}")
    if options.max_trials_per_task is not None and options.max_trials_per_task < 1:
        raise UserInputError(
            f"--max-trials-per-task must be 1 or more, not {options.max_trials_per_task}"
        )
    if options.layout not in ("auto", "NCHW", "NHWC"):
        raise UserInputError(f"--layout must be NHWC, NCHW or auto, not {options.layout!r}")
    return parse_target(options.target)
