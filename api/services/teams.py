"""Teams and their API tokens. A token is shown once, at creation; only its sha256 is kept."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from tunefarm.api.errors import InvalidInput, NotFound, Unauthorized
from tunefarm.tuning_db.schema import ApiTokenRow, TeamRow, utc_now

TOKEN_PREFIX = "tf_"
_TOKEN_SHAPE = re.compile(r"^tf_[A-Za-z0-9_-]{32,128}$")
_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Team:
    id: int
    name: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_team(engine: Engine, name: str) -> tuple[Team, str]:
    """A new team and its first token."""
    if not _TEAM_NAME.match(name):
        raise InvalidInput(
            f"team name {name!r} must be 1 to 64 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    try:
        with engine.begin() as connection:
            team_id = connection.execute(
                insert(TeamRow).values(name=name, created_at=utc_now()).returning(TeamRow.id)
            ).scalar_one()
    except IntegrityError as err:
        raise InvalidInput(f"a team named {name!r} exists already") from err
    team = Team(id=int(team_id), name=name)
    return team, create_token(engine, name)


@dataclass(frozen=True)
class TeamSummary:
    name: str
    created_at: datetime
    tokens: int


def list_teams(engine: Engine) -> list[TeamSummary]:
    """Every team, oldest first, with how many tokens it has (never the tokens)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(TeamRow.name, TeamRow.created_at, func.count(ApiTokenRow.id))
            .outerjoin(ApiTokenRow, ApiTokenRow.team_id == TeamRow.id)
            .group_by(TeamRow.id, TeamRow.name, TeamRow.created_at)
            .order_by(TeamRow.created_at, TeamRow.name)
        ).all()
    return [TeamSummary(name, created_at, int(tokens)) for name, created_at, tokens in rows]


def create_token(engine: Engine, team_name: str) -> str:
    """A new token for the team; the caller shows it once, it is never stored."""
    with engine.begin() as connection:
        team_id = connection.execute(select(TeamRow.id).where(TeamRow.name == team_name)).scalar()
        if team_id is None:
            raise NotFound(f"no team named {team_name!r}")
        token = new_token()
        connection.execute(
            insert(ApiTokenRow).values(
                team_id=team_id, token_sha256=token_hash(token), created_at=utc_now()
            )
        )
    return token


AUTHENTICATED_FOR_SEC = 10.0
"""How long a token, once found, is taken without asking the database again: a client polling
a job's status costs one query per request instead of two. So a revoked token keeps working for
at most this long on an API process that accepted it just before (``revoke_token``)."""

_recently_authenticated: dict[tuple[int, str], tuple[float, Team]] = {}


def authenticate(engine: Engine, token: str | None) -> Team:
    """The team that holds ``token``; ``Unauthorized`` with the reason otherwise."""
    if not token:
        raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
    if not _TOKEN_SHAPE.match(token):
        raise Unauthorized("malformed token: tunefarm tokens look like 'tf_' and 43 characters")
    digest = token_hash(token)
    cache_key = (id(engine), digest)
    remembered = _recently_authenticated.get(cache_key)
    if remembered is not None and time.monotonic() - remembered[0] < AUTHENTICATED_FOR_SEC:
        return remembered[1]
    team = _look_up(engine, digest)
    if len(_recently_authenticated) > 10_000:
        _recently_authenticated.clear()
    _recently_authenticated[cache_key] = (time.monotonic(), team)
    return team


def revoke_token(engine: Engine, token: str) -> Team:
    """Delete ``token``; the team it belonged to. ``NotFound`` if no team holds it.

    This process forgets it at once. Another API process that accepted it in the last
    ``AUTHENTICATED_FOR_SEC`` seconds takes it until that runs out, then asks the database."""
    digest = token_hash(token.strip())
    with engine.begin() as connection:
        row = connection.execute(
            select(ApiTokenRow.id, TeamRow.id.label("team_id"), TeamRow.name)
            .join(TeamRow, TeamRow.id == ApiTokenRow.team_id)
            .where(ApiTokenRow.token_sha256 == digest)
        ).first()
        if row is None:
            raise NotFound("no team holds that token (revoked already, or mistyped)")
        connection.execute(delete(ApiTokenRow).where(ApiTokenRow.id == row.id))
    _forget(lambda key: key[1] == digest)
    return Team(id=int(row.team_id), name=str(row.name))


def revoke_team_tokens(engine: Engine, team_name: str) -> int:
    """Delete every token of the team; how many there were. ``NotFound`` for no such team."""
    with engine.begin() as connection:
        team_id = connection.execute(select(TeamRow.id).where(TeamRow.name == team_name)).scalar()
        if team_id is None:
            raise NotFound(f"no team named {team_name!r}")
        deleted = connection.execute(delete(ApiTokenRow).where(ApiTokenRow.team_id == team_id))
    _forget(lambda key: _recently_authenticated[key][1].id == team_id)
    return int(deleted.rowcount or 0)


def _forget(matches: Callable[[tuple[int, str]], bool]) -> None:
    for key in [key for key in _recently_authenticated if matches(key)]:
        _recently_authenticated.pop(key, None)


def _look_up(engine: Engine, digest: str) -> Team:
    with engine.connect() as connection:
        row = connection.execute(
            select(ApiTokenRow.token_sha256, TeamRow.id, TeamRow.name)
            .join(TeamRow, TeamRow.id == ApiTokenRow.team_id)
            .where(ApiTokenRow.token_sha256 == digest)
        ).first()
    # The index finds the row by hash; the comparison itself takes constant time.
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        raise Unauthorized("unknown token")
    return Team(id=int(row.id), name=str(row.name))
