"""The measure task: a batch of candidates in, run times or error strings out."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from tunefarm.tuner.trial import MeasureSettings, TrialRequest
from tunefarm.workers.celery_app import app
from tunefarm.workers.worker_registry import working_on
from tunefarm.workers.worker_state import identity, measure_requests

MEASURE_TASK = "tunefarm.measure_batch"
MAX_BATCH = 256


class MeasureSettingsModel(BaseModel):
    number: int = Field(default=3, ge=1, le=1000)
    repeat: int = Field(default=1, ge=1, le=1000)
    min_repeat_ms: int = Field(default=20, ge=0, le=60_000)
    enable_cpu_cache_flush: bool = False
    cold_cache: bool = False


class TrialRequestModel(BaseModel):
    mod_json: str
    target_json: str
    args_info: list[list[Any]]
    device_id: int = Field(default=0, ge=0)
    settings: MeasureSettingsModel = Field(default_factory=MeasureSettingsModel)

    def to_request(self) -> TrialRequest:
        return TrialRequest(
            mod_json=self.mod_json,
            target_json=self.target_json,
            args_info=self.args_info,
            device_id=self.device_id,
            settings=MeasureSettings(**self.settings.model_dump()),
        )


class MeasureBatch(BaseModel):
    requests: list[TrialRequestModel] = Field(min_length=1, max_length=MAX_BATCH)


def batch_payload(requests: list[TrialRequest]) -> dict[str, Any]:
    return {"requests": [asdict(request) for request in requests]}


@app.task(name=MEASURE_TASK)
def measure_batch(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate the batch, build and time every candidate, return one result dict each."""
    batch = MeasureBatch.model_validate(payload)
    queue, name = identity()
    requests = [request.to_request() for request in batch.requests]
    if queue is None:
        results = measure_requests(requests)
    else:
        with working_on(app.conf.broker_url, queue, name, candidates=len(requests)):
            results = measure_requests(requests)
    return [asdict(result) for result in results]
