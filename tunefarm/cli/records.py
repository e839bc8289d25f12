"""``tunefarm records``: move tuning records between tunefarm and MetaSchedule's JSON logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from tunefarm.cli.app import (
    EXIT_INTERNAL_ERROR,
    DatabaseOption,
    app,
    database_url,
    fail,
    first_line,
)

records_app = typer.Typer(help="Move tuning records between tunefarm and MetaSchedule's JSON logs.")
app.add_typer(records_app, name="records")


@records_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="Folder for the two JSON files.")],
    db: DatabaseOption = None,
) -> None:
    """Write every record in MetaSchedule's JSON layout (the two database_*.json files)."""
    from tunefarm.tuning_db.json_logs import export_json_logs

    try:
        counts = export_json_logs(database_url(db), directory)
    except SQLAlchemyError as err:
        fail(f"database error: {first_line(err)}", EXIT_INTERNAL_ERROR)
    except (ValueError, OSError) as err:  # DatabaseUrlError is a ValueError
        fail(str(err))
    print(f"exported {counts.workloads} workloads and {counts.records} records to {directory}")


@records_app.command("import")
def import_command(
    directory: Annotated[Path, typer.Argument(help="Folder with MetaSchedule's JSON database.")],
    db: DatabaseOption = None,
) -> None:
    """Read MetaSchedule's JSON database files into the tuning database (duplicates skipped)."""
    from tunefarm.tuning_db.json_logs import import_json_logs

    try:
        counts = import_json_logs(database_url(db), directory)
    except SQLAlchemyError as err:
        fail(f"database error: {first_line(err)}", EXIT_INTERNAL_ERROR)
    except (ValueError, OSError) as err:  # DatabaseUrlError is a ValueError
        fail(str(err))
    print(
        f"imported {counts.new_records} new records of {counts.records} and "
        f"{counts.new_workloads} new workloads of {counts.workloads} from {directory} "
        "(the others were there already)"
    )
