"""The options of a compile on this host: the user's ``JobSpec`` and the host's own settings.

Apart from ``compile_job`` so that ``coverage_plan`` (``tunefarm plan``) can take the same
options without importing the compile job, which imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.search import SearchSettings, configured_search
from tunefarm.tuner.trial import MeasureSettings


@dataclass
class CompileOptions:
    """A compile on this host: the user's spec, and where the model, the library and the
    records are."""

    model_path: Path
    spec: JobSpec
    out_dir: Path
    database_url: str
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
    verbose: bool = False
    """Let MetaSchedule log its task table and every iteration."""
    prior_trials: dict[str, int] = field(default_factory=dict)
    """Trials per task that an earlier, interrupted run of the same job already measured. Those
    tasks are tuned on, from their records, with what is left of the spec's trials."""

    @property
    def trials_left(self) -> int:
        return max(0, self.spec.trials - sum(self.prior_trials.values()))
