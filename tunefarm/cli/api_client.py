"""A small client of tunefarm's HTTP API, for ``tunefarm submit`` and ``tunefarm download``.

It speaks HTTP only (httpx): nothing here imports the API's code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tunefarm.cli.job_display import JobSnapshot
from tunefarm.tuner.job_spec import JobSpec


class ApiClientError(Exception):
    """The API refused the request, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def is_user_error(self) -> bool:
        return self.status_code is not None and 400 <= self.status_code < 500


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout_sec: float = 120.0) -> None:
        if not token:
            raise ApiClientError(
                "no API token: pass --token or set TUNEFARM_API_TOKEN", status_code=401
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_sec, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def upload_model(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as stream:
            return self._json("POST", "/v1/models", files={"file": (path.name, stream)})

    def submit_job(self, model_id: str, spec: JobSpec) -> dict[str, Any]:
        body = {"model_id": model_id, **spec.model_dump(mode="json")}
        return self._json("POST", "/v1/jobs", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def manifest(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/manifest")

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's Server-Sent Events as (event, data) until the ``end`` event."""
        with self._request_stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            event, data = "message", []
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data.append(line[len("data:") :].strip())
                elif not line and data:
                    yield event, json.loads("\n".join(data))
                    if event == "end":
                        return
                    event, data = "message", []

    def download_artifact(self, job_id: str, path: Path) -> str:
        """Stream the library to ``path``; returns the sha256 of what arrived."""
        digest = hashlib.sha256()
        with (
            self._request_stream("GET", f"/v1/jobs/{job_id}/artifact") as response,
            path.open("wb") as out,
        ):
            for chunk in response.iter_bytes():
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ApiClientError(f"cannot reach the API at {self.url}: {err}") from err
        _raise_for_error(response)
        result: dict[str, Any] = response.json()
        return result

    def _request_stream(self, method: str, path: str, **kwargs: Any) -> Any:
        client = self

        class _Stream:
            def __enter__(self) -> httpx.Response:
                try:
                    self._context = client._http.stream(method, path, **kwargs)
                    response = self._context.__enter__()
                except httpx.HTTPError as err:
                    raise ApiClientError(f"cannot reach the API at {client.url}: {err}") from err
                if response.status_code >= 400:
                    response.read()
                    self._context.__exit__(None, None, None)
                    _raise_for_error(response)
                return response

            def __exit__(self, *exc_info: Any) -> None:
                self._context.__exit__(*exc_info)

        return _Stream()


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    raise ApiClientError(
        f"{message} (HTTP {response.status_code})", status_code=response.status_code
    )


def status_snapshot(status: dict[str, Any]) -> JobSnapshot:
    """What the progress display shows of a job status from the API."""
    latency = status.get("estimated_latency_ms")
    return JobSnapshot(
        state=status["state"],
        message=status.get("message") or "",
        trials_done=status.get("trials_done", 0),
        trials_total=status.get("trials_total"),
        detail=f"est. {latency:.3f} ms" if latency else "est. —",
    )
