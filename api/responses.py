"""Responses that the API and the dashboard give alike: a job's event stream and its library."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import Response, StreamingResponse


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-Sent Events, never cached or buffered by a proxy."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def library_download(library: bytes, sha256: str) -> Response:
    """``model.so`` as an attachment, its sha256 in ``X-Content-SHA256``."""
    return Response(
        library,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": 'attachment; filename="model.so"',
            "X-Content-SHA256": sha256,
        },
    )
