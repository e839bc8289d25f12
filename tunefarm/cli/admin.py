"""``tunefarm admin``: teams and API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from tunefarm.cli.app import DatabaseOption, app, counted, database_url, error_console, fail

admin_app = typer.Typer(help="Teams and API tokens (run where TUNEFARM_DATABASE_URL points).")
app.add_typer(admin_app, name="admin")


@admin_app.command("create-team")
def create_team_command(
    name: Annotated[str, typer.Argument(help="The team's name: a-z, 0-9, '-' and '_'.")],
    db: DatabaseOption = None,
) -> None:
    """Create a team and print its first token, once: only its hash is stored."""
    from tunefarm.api.errors import ApiError
    from tunefarm.api.services.teams import create_team
    from tunefarm.tuning_db.sql_database import open_engine

    try:
        team, token = create_team(open_engine(database_url(db)), name)
    except ApiError as err:
        fail(err.message)
    error_console.print(f"team {team.name} created; its token is shown once:")
    print(token)


@admin_app.command("create-token")
def create_token_command(
    team: Annotated[str, typer.Argument(help="The team's name.")],
    db: DatabaseOption = None,
) -> None:
    """Print a new token for TEAM, once: only its hash is stored."""
    from tunefarm.api.errors import ApiError
    from tunefarm.api.services.teams import create_token
    from tunefarm.tuning_db.sql_database import open_engine

    try:
        token = create_token(open_engine(database_url(db)), team)
    except ApiError as err:
        fail(err.message)
    error_console.print(f"a new token for team {team}, shown once:")
    print(token)


@admin_app.command("list-teams")
def list_teams_command(db: DatabaseOption = None) -> None:
    """Every team, with when it was made and how many tokens it has."""
    from tunefarm.api.services.teams import list_teams
    from tunefarm.tuning_db.sql_database import open_engine

    teams = list_teams(open_engine(database_url(db)))
    if not teams:
        error_console.print("no teams yet (tunefarm admin create-team NAME)")
        return
    for team in teams:
        tokens = counted(team.tokens, "token")
        print(f"{team.name}  created {team.created_at:%Y-%m-%d %H:%M}  {tokens}")


@admin_app.command("revoke-token")
def revoke_token_command(
    token: Annotated[
        str | None,
        typer.Argument(help="The token to revoke; '-' reads it from stdin (kept out of history)."),
    ] = None,
    team: Annotated[
        str | None, typer.Option("--team", help="Revoke every token of this team instead.")
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Revoke a token, or all of a team's. An API process that accepted it in the last
    10 s keeps taking it until those 10 s run out."""
    import sys

    from tunefarm.api.errors import ApiError
    from tunefarm.api.services.teams import (
        AUTHENTICATED_FOR_SEC,
        revoke_team_tokens,
        revoke_token,
    )
    from tunefarm.tuning_db.sql_database import open_engine

    if (token is None) == (team is None):
        fail("give a TOKEN (or '-' to read it from stdin), or --team NAME for all its tokens")
    grace = f"running API processes may take it for up to {AUTHENTICATED_FOR_SEC:g} s more"
    try:
        if team is not None:
            count = revoke_team_tokens(open_engine(database_url(db)), team)
            error_console.print(f"revoked {counted(count, 'token')} of team {team}; {grace}")
            return
        assert token is not None
        value = sys.stdin.readline() if token == "-" else token
        owner = revoke_token(open_engine(database_url(db)), value)
    except ApiError as err:
        fail(err.message)
    error_console.print(f"revoked a token of team {owner.name}; {grace}")
