"""The dashboard's sign-in: a team token kept in a cookie, and the CSRF token of its forms.

The cookie holds the team token itself, so a revoked token signs the browser out at its next
request (``teams.authenticate``, the API's own check) and nothing is stored on the server. It
is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure
where the dashboard is served over HTTPS.

Every form that changes something (cancel, promote, sign out) carries a CSRF token derived from
the session's token with HMAC, and the server checks it: a page of another origin can neither
read it nor compute it. The Origin header, where the browser sends one, must be ours too.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import Engine

from tunefarm.api.errors import ApiError, Unauthorized
from tunefarm.api.services.teams import Team, authenticate

COOKIE = "tunefarm_session"
SESSION_MAX_AGE_SEC = 12 * 3600


class SignInRequired(ApiError):
    """No valid session: pages answer with the sign-in page, not an error body."""

    status_code = 401
    code = "sign_in_required"


class CsrfRejected(ApiError):
    status_code = 403
    code = "csrf_rejected"


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"tunefarm-dashboard-csrf", hashlib.sha256).hexdigest()


def session_team(request: Request, engine: Engine) -> tuple[Team, str]:
    """The signed-in team and its token; ``SignInRequired`` otherwise."""
    token = request.cookies.get(COOKIE)
    try:
        return authenticate(engine, token), str(token)
    except Unauthorized as err:
        raise SignInRequired(err.message) from None


def check_csrf(request: Request, session_token: str, submitted: str | None) -> None:
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        raise CsrfRejected("this form came from another site")
    if not submitted or not hmac.compare_digest(submitted, csrf_token(session_token)):
        raise CsrfRejected("the form's CSRF token is missing or wrong: reload the page")


def start_session(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_MAX_AGE_SEC,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")
