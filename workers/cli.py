"""The ``tunefarm`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from tuner.errors import UserInputError
from tuner.settings import Settings
from tuning_db.engine import DatabaseUrlError

app = typer.Typer(
    name="tunefarm",
    help="Tune and compile ONNX models with TVM; every measurement goes into a SQL database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
records_app = typer.Typer(help="Move tuning records between tunefarm and MetaSchedule's JSON logs.")
app.add_typer(records_app, name="records")

console = Console()
error_console = Console(stderr=True)

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _database_url(db: str | None) -> str:
    return db or Settings().resolved_database_url()


@app.command("compile")
def compile_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.")],
    target: Annotated[
        str,
        typer.Option(help="llvm, cuda, 'cuda -arch=sm_90', or TVM target JSON."),
    ] = "llvm",
    trials: Annotated[int, typer.Option(help="Total tuning trials for the missing tasks.")] = 64,
    out: Annotated[Path, typer.Option(help="Where model.so and manifest.json go.")] = Path("out"),
    db: Annotated[
        str | None,
        typer.Option(help="Database URL (default: SQLite in the data dir; TUNEFARM_DATABASE_URL)."),
    ] = None,
    fp16: Annotated[bool, typer.Option(help="Convert to float16 mixed precision.")] = False,
    layout: Annotated[str, typer.Option(help="NHWC, NCHW or auto.")] = "auto",
    max_trials_per_task: Annotated[
        int | None, typer.Option(help="Cap per task (default: an even share of --trials).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the search.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Warm measuring processes (default: by target).")
    ] = None,
    farm: Annotated[
        bool,
        typer.Option(
            "--farm", help="Measure on the farm's workers (TUNEFARM_BROKER_URL) instead of here."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Tune and compile MODEL for TARGET into OUT/model.so and OUT/manifest.json."""

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    settings = Settings()
    try:
        from tuner.compile_job import CompileOptions, compile_model
        from tuner.console_progress import ConsoleObserver

        options = CompileOptions(
            model_path=model,
            target=target,
            out_dir=out,
            database_url=db or settings.resolved_database_url(),
            trials=trials,
            max_trials_per_task=max_trials_per_task,
            layout=layout,  # type: ignore[arg-type]  # checked in check_options
            fp16=fp16,
            seed=seed,
            workers=workers,
            measure_timeout_sec=settings.measure_timeout_sec,
            max_model_bytes=settings.max_model_bytes,
            verbose=verbose,
        )
        executor = _farm_executor(options.target, settings) if farm else None
        result = compile_model(options, observer=ConsoleObserver(console), executor=executor)
    except (UserInputError, DatabaseUrlError) as err:
        _fail(str(err))
    except SQLAlchemyError as err:
        _fail(f"database error: {_first_line(err)}", EXIT_INTERNAL_ERROR)
    manifest = result.manifest
    latency = manifest["latency"]
    coverage = manifest["coverage_before_tuning"]
    print(f"library:  {result.library_path}")
    print(f"manifest: {result.manifest_path}")
    print(
        f"trials run: {manifest['tuning']['trials_run']}, coverage before tuning: "
        f"{coverage['tasks_percent']:.0f}% of tasks, {coverage['flops_percent']:.0f}% of FLOPs"
    )
    print(
        f"latency p50: untuned {latency['untuned']['p50_ms']:.3f} ms, "
        f"tuned {latency['tuned']['p50_ms']:.3f} ms; "
        f"max |diff| vs ONNX Runtime: {manifest['check_vs_onnxruntime']['max_abs_diff']:.2e}"
    )


def _farm_executor(target_text: str, settings: Settings):  # type: ignore[no-untyped-def]
    from tuner.targets import parse_target
    from workers.celery_app import app as celery_app
    from workers.farm_executor import CeleryTrialExecutor
    from workers.queues import measure_queue

    return CeleryTrialExecutor(
        celery_app,
        measure_queue(parse_target(target_text)),
        timeout_sec=settings.measure_timeout_sec,
    )


@app.command("worker")
def worker_command(
    target: Annotated[str, typer.Option(help="The target this worker measures for.")] = "llvm",
    device: Annotated[
        int | None, typer.Option(help="GPU index to pin this worker to (CUDA_VISIBLE_DEVICES).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Warm build-and-time processes in this worker.")
    ] = 1,
) -> None:
    """Start a measure worker for TARGET's queue on the farm's broker (TUNEFARM_BROKER_URL)."""
    from tuner.settings import Settings
    from workers.measure_worker import run_measure_worker

    try:
        run_measure_worker(
            target,
            device=device,
            concurrency=concurrency,
            timeout_sec=Settings().measure_timeout_sec,
        )
    except UserInputError as err:
        _fail(str(err))


@app.command("sample-model")
def sample_model_command(
    path: Annotated[Path, typer.Argument(help="Where to write the .onnx file.")],
    name: Annotated[str, typer.Option(help="Which sample: tiny-cnn.")] = "tiny-cnn",
) -> None:
    """Write a small ONNX model that tunes in seconds (for trying tunefarm out)."""
    from tuner.sample_models import write_sample

    try:
        write_sample(name, path)
    except KeyError as err:
        _fail(str(err.args[0]))
    print(f"wrote {path}")


@records_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="Folder for the two JSON files.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Write every record in MetaSchedule's JSON layout (the two database_*.json files)."""
    from tuning_db.json_logs import export_json_logs

    try:
        counts = export_json_logs(_database_url(db), directory)
    except SQLAlchemyError as err:
        _fail(f"database error: {_first_line(err)}", EXIT_INTERNAL_ERROR)
    except (ValueError, OSError) as err:  # DatabaseUrlError is a ValueError
        _fail(str(err))
    print(f"exported {counts.workloads} workloads and {counts.records} records to {directory}")


@records_app.command("import")
def import_command(
    directory: Annotated[Path, typer.Argument(help="Folder with MetaSchedule's JSON database.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Read MetaSchedule's JSON database files into the tuning database (duplicates skipped)."""
    from tuning_db.json_logs import import_json_logs

    try:
        counts = import_json_logs(_database_url(db), directory)
    except SQLAlchemyError as err:
        _fail(f"database error: {_first_line(err)}", EXIT_INTERNAL_ERROR)
    except (ValueError, OSError) as err:  # DatabaseUrlError is a ValueError
        _fail(str(err))
    print(f"imported {counts.workloads} workloads and {counts.records} records from {directory}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except Exception as err:
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


if __name__ == "__main__":
    main()
