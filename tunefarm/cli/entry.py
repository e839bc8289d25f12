"""The ``tunefarm`` command: every command group registered, and what a failure looks like."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

# Each module registers its commands on the app.
from tunefarm.cli import admin, compile_commands, jobs, records, remote, service  # noqa: F401
from tunefarm.cli.app import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, app, error_console
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db.engine import DatabaseUrlError


def main() -> None:
    # Before TVM starts its thread pool: libraries, trials and timings use every core.
    from tunefarm.tuner.cpu_threads import use_physical_cores

    use_physical_cores()
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        # Every command reads the TUNEFARM_* settings somewhere; a bad one fails here, first,
        # whichever command it is.
        Settings()
        app()
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except (UserInputError, DatabaseUrlError) as err:
        # Bad input a command did not catch itself (a database URL whose driver is missing).
        error_console.print(f"error: {err}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except OperationalError as err:
        # The database is down or refuses us: not a bug of ours, and no traceback helps.
        reason = str(err.orig or err).strip().splitlines()[0]
        error_console.print(
            f"error: the database cannot be reached ({reason}); check --db or "
            "TUNEFARM_DATABASE_URL",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)
    except ValidationError as err:
        if err.title == Settings.__name__:
            # A TUNEFARM_* variable that does not parse is the user's to fix, not a bug of ours.
            for problem in err.errors():
                name = "TUNEFARM_" + "_".join(str(part) for part in problem["loc"]).upper()
                error_console.print(f"error: {name}: {problem['msg']}", highlight=False)
            sys.exit(EXIT_USER_ERROR)
        _internal_error(err)
    except Exception as err:
        _internal_error(err)


def _on_interrupt(signum: int, frame: object) -> None:
    # Also recorded: where the interrupt lands inside a TVM callback it becomes a TVM error,
    # and the tuning loop stops on the record instead (tuner.interrupts).
    from tunefarm.tuner import interrupts

    if interrupts.in_cooperative_section() and not interrupts.requested():
        interrupts.request()
        error_console.print("stopping after the step in flight (Ctrl-C again to stop now)")
        return
    interrupts.request()
    raise KeyboardInterrupt


def _internal_error(err: Exception) -> NoReturn:
    # A bug of ours: the user gets one line and a file with the traceback, not a wall of it.
    crash_log = _write_crash_log()
    summary = str(err).splitlines()[0] if str(err) else ""
    error_console.print(
        f"[bold red]internal error:[/] {type(err).__name__}: {summary}"
        f"\n  the traceback is in {crash_log}; please attach it to a bug report",
        highlight=False,
    )
    sys.exit(EXIT_INTERNAL_ERROR)


def _write_crash_log() -> Path:
    import tempfile
    import time
    import traceback

    path = Path(tempfile.gettempdir()) / f"tunefarm-crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.write_text(traceback.format_exc())
    return path
