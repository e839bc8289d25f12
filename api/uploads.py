"""Receiving a model upload: a multipart form with one file field, ``file``.

The body is counted as it streams in (``BodyLimit``); the file goes to a private folder under
the data dir while its sha256 is computed.
"""

from __future__ import annotations

import hashlib

from fastapi import Request
from starlette.datastructures import UploadFile

from tunefarm.api.errors import InvalidInput
from tunefarm.api.services.models import ReceivedFile, discard_upload, new_upload_path
from tunefarm.tuner.settings import Settings

MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "an .onnx"}
                    },
                }
            }
        },
    }
}
"""The request body for OpenAPI: the route reads the form itself, to stream it."""


async def receive_upload(request: Request, settings: Settings) -> ReceivedFile:
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the model as a multipart/form-data file field named 'file'")
        path = new_upload_path(settings, upload.filename or "model.onnx")
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except BaseException:
            discard_upload(path)
            raise
    return ReceivedFile(path=path, filename=path.name, size=size, sha256=digest.hexdigest())
