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
