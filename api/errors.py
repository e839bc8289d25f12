"""The API's errors and the one place where errors become HTTP answers.

Services raise ``ApiError`` subclasses (or tuner's ``UserInputError``); they never build HTTP
responses. Every error answer has the body ``{"error": {"code": ..., "message": ...}}``, with a
message that names the problem. Anything unexpected is logged here with its traceback and
answered as a bare 500, so no traceback ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunefarm.tuner.errors import UserInputError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ApiError):
    status_code = 422
    code = "invalid_input"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class NotFound(ApiError):
    """Also the answer for another team's objects: their existence is not revealed."""

    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    """The object exists but is not in a state that allows the request (no artifact yet)."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    """A service the API needs (the broker) cannot be reached; retrying later may work."""

    status_code = 503
    code = "service_unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _answer(status_code: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers or None)


async def _api_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthorized) else {}
    return _answer(err.status_code, err.code, err.message, **headers)


async def _user_input_error(_request: Request, err: Exception) -> JSONResponse:
    return _answer(422, "invalid_input", str(err))


async def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    problems = []
    for problem in err.errors()[:5]:
        if problem.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({problem.get('msg', '')})")
            continue
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {problem.get('msg', 'is not valid')}")
    return _answer(422, "invalid_input", "; ".join(problems) or "the request is not valid")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(_request: Request, err: Exception) -> JSONResponse:
    # Starlette's own: an unknown path, a wrong method, a multipart body that does not parse.
    assert isinstance(err, StarletteHTTPException)
    code = _HTTP_CODES.get(err.status_code, "http_error")
    return _answer(err.status_code, code, str(err.detail), **(err.headers or {}))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    logger.exception("unexpected error answering %s %s", request.method, request.url.path)
    return _answer(500, "internal", "internal error; the server log has the details")


async def _service_away(request: Request, err: Exception) -> JSONResponse:
    # A database or broker outage is the service's, for a while: a 503 the client can retry,
    # not a 500 (issue 21's chaos rounds stop PostgreSQL and restart Redis under load).
    logger.warning("answering %s %s with 503: %s", request.method, request.url.path, err)
    what = "database" if isinstance(err, sqlalchemy.exc.DBAPIError) else "broker"
    return _answer(
        503, "unavailable", f"the {what} is unreachable; try again shortly", **{"Retry-After": "5"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _service_away)
    app.add_exception_handler(sqlalchemy.exc.InterfaceError, _service_away)
    app.add_exception_handler(redis.exceptions.ConnectionError, _service_away)
    app.add_exception_handler(kombu.exceptions.OperationalError, _service_away)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(UserInputError, _user_input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
