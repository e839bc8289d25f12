"""tunefarm's settings: one class, environment variables prefixed ``TUNEFARM_``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_api_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tunefarm", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFARM_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Models, artifacts and the default SQLite database live here."""
    database_url: str | None = None
    """SQLAlchemy URL of the tuning database; default: ``sqlite:///<data_dir>/tunefarm.db``."""
    broker_url: str = "redis://127.0.0.1:6379/0"
    """Celery broker (and result backend) of the farm."""
    measure_chunk_size: int | None = None
    """Farm mode: candidates per measure task. By default one chunk per live measure worker of
    the queue, as the workers advertise themselves in Redis."""
    job_lease_sec: float = 30.0
    """A coordinator renews its job's lease well within this; a job whose lease runs out is
    resumed by another coordinator."""
    job_resend_sec: float = Field(default=120.0, gt=0)
    """A queued job no coordinator took for this long has its queue message sent again (a
    Redis restarted without its data has lost it); a duplicate message is harmless."""
    max_model_bytes: int = 2 * 1024**3
    max_tensor_bytes: int = Field(default=2 * 1024**3, gt=0)
    """Largest tensor a model's node may produce (shapes inferred before import): TVM's
    importer builds constant ones in full, so a tiny model could otherwise exhaust memory."""
    import_memory_bytes: int = Field(default=8 * 1024**3, gt=0)
    """Memory an ONNX import may take, tried first in a child process (``tuner/import_guard``)."""
    import_timeout_sec: float = Field(default=300.0, gt=0)
    """Longest an ONNX import may take, likewise."""
    measure_timeout_sec: float = 60.0
    """Longest a candidate may take to build and run before it counts as failed."""
    measure_queue_timeout_sec: float = Field(default=600.0, gt=0)
    """Farm mode: how long a batch may wait for a measure worker to take it. A job none of
    whose batches was ever taken fails then, with the queue's name in its error."""
    search_overlap: bool = True
    """Search the next batch while the current one is measured (``tuner/overlapped_search.py``);
    False runs MetaSchedule's own task scheduler loop."""
    search_batch: int | None = Field(default=None, ge=1, le=1024)
    """Candidates per search batch; default: ``FAST_SEARCH``'s 32."""
    search_in_flight: int | None = Field(default=None, ge=1, le=16)
    """Batches out to the measure workers at once; default 2."""
    search_split_k: bool = True
    """CUDA tensor-core targets: the search also tries split-K schedules for convolutions and
    matmuls with few output values (``tuner/split_k.py``). At 64 trials on an H100 they were
    1.8-5x faster than MetaSchedule's best on every such task measured (``bench/split_k.py``)."""

    # -- the HTTP API (``tunefarm serve``) --
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(default_factory=lambda: _default_api_workers(), ge=1)
    """uvicorn worker processes of ``tunefarm serve``: one per core, up to 4. One process
    answered submits at 200/s with a p99 of 56 ms on 2 cores, two with 17 ms
    (``bench/api_load.py``); each request's database round trips leave its core idle."""
    api_analysis_workers: int = Field(default=2, ge=1, le=32)
    """Child processes per API process that find a model's tasks for its coverage (the API
    never imports a model itself; a request meanwhile answers ``coverage_state: pending``)."""
    api_max_upload_bytes: int = 512 * 1024**2
    """Largest model upload; a larger body is refused with 413 while it streams in."""
    api_max_request_bytes: int = 32 * 1024**2
    """Largest request body of every other endpoint (a records import, say)."""
    api_events_poll_sec: float = 0.5
    """How often a job's event stream looks at the job row."""
    # -- the API's clients (``tunefarm submit``, ``tunefarm download``) --
    api_url: str = "http://127.0.0.1:8000"
    api_token: str | None = None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tunefarm.db'}"
