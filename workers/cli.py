"""The ``tunefarm`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from tuner.errors import UserInputError
from tuner.settings import Settings
from tuning_db.engine import DatabaseUrlError

if TYPE_CHECKING:
    from tuner.compile_job import CompileOptions

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
    model: Annotated[
        Path, typer.Argument(help="The ONNX model file, or a torch.export program (.pt2).")
    ],
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
    cuda_graph: Annotated[
        bool | None,
        typer.Option(
            "--cuda-graph/--no-cuda-graph",
            help="Replay the model as one CUDA graph (default: on for CUDA targets).",
        ),
    ] = None,
    layout: Annotated[str, typer.Option(help="NHWC, NCHW or auto.")] = "auto",
    max_trials_per_task: Annotated[
        int | None, typer.Option(help="Cap per task (default: an even share of --trials).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the search.")] = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start/--no-warm-start",
            help="Start tasks with no record from the records of similar workloads.",
        ),
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="Warm measuring processes (default: by target).")
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline",
            help="Report the untuned baseline (measured once per model, target and pipeline).",
        ),
    ] = True,
    farm: Annotated[
        bool,
        typer.Option(
            "--farm",
            help="Run as a job on the farm (TUNEFARM_BROKER_URL; --db is the farm's database).",
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
            cuda_graph=cuda_graph,
            seed=seed,
            warm_start=warm_start,
            workers=workers,
            baseline=baseline,
            measure_timeout_sec=settings.measure_timeout_sec,
            max_model_bytes=settings.max_model_bytes,
            verbose=verbose,
        )
        if farm:
            library_path, manifest_path, manifest = _compile_on_farm(options)
        else:
            result = compile_model(options, observer=ConsoleObserver(console))
            library_path, manifest_path = result.library_path, result.manifest_path
            manifest = result.manifest
    except (UserInputError, DatabaseUrlError) as err:
        _fail(str(err))
    except SQLAlchemyError as err:
        _fail(f"database error: {_first_line(err)}", EXIT_INTERNAL_ERROR)
    from tuner.library_report import LibraryReport

    coverage = manifest["coverage_before_tuning"]
    print(f"library:  {library_path}")
    print(f"manifest: {manifest_path}")
    print(
        f"trials run: {manifest['tuning']['trials_run']}, coverage before tuning: "
        f"{coverage['tasks_percent']:.0f}% of tasks, {coverage['flops_percent']:.0f}% of FLOPs"
    )
    for line in LibraryReport.from_manifest(manifest).summary_lines():
        print(line)


@app.command("plan")
def plan_command(
    model: Annotated[
        Path, typer.Argument(help="The ONNX model file, or a torch.export program (.pt2).")
    ],
    target: Annotated[
        str,
        typer.Option(help="llvm, cuda, 'cuda -arch=sm_90', or TVM target JSON."),
    ] = "llvm",
    trials: Annotated[int, typer.Option(help="The --trials a compile would get.")] = 64,
    max_trials_per_task: Annotated[
        int | None, typer.Option(help="The --max-trials-per-task a compile would get.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="Database URL (default: SQLite in the data dir; TUNEFARM_DATABASE_URL)."),
    ] = None,
    fp16: Annotated[bool, typer.Option(help="Convert to float16 mixed precision.")] = False,
    layout: Annotated[str, typer.Option(help="NHWC, NCHW or auto.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """What the database already covers for MODEL on TARGET, and what a compile would tune."""
    from tuner.coverage_plan import plan_model

    try:
        plan = plan_model(
            model,
            target=target,
            database_url=_database_url(db),
            trials=trials,
            max_trials_per_task=max_trials_per_task,
            layout=layout,  # type: ignore[arg-type]  # checked in check_options
            fp16=fp16,
        )
    except (UserInputError, DatabaseUrlError) as err:
        _fail(str(err))
    except SQLAlchemyError as err:
        _fail(f"database error: {_first_line(err)}", EXIT_INTERNAL_ERROR)
    if as_json:
        print(json.dumps(plan.as_dict(), indent=2))
        return
    _print_plan(plan.as_dict())


def _print_plan(plan: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="coverage before tuning", title_justify="left")
    for column in ("task", "weight", "GFLOP", "reuse", "best µs", "distance", "trials"):
        table.add_column(column, justify="left" if column in ("task", "reuse") else "right")
    for task in plan["tasks"]:
        table.add_row(
            task["name"],
            str(task["weight"]),
            f"{task['flops'] / 1e9:.3f}",
            task["reuse"],
            "" if task["best_latency_us"] is None else f"{task['best_latency_us']:.2f}",
            "" if task["distance"] is None else f"{task['distance']:.3f}",
            str(task["planned_trials"]),
        )
    console.print(table)
    by_reuse = plan["tasks_by_reuse"]
    console.print(
        f"covered: {plan['tasks_covered']} of {plan['tasks_total']} tasks "
        f"({plan['tasks_percent']:.0f}%), {plan['flops_percent']:.0f}% of FLOP-weighted time "
        f"(exact {by_reuse['exact']}, same target class {by_reuse['class']})\n"
        f"similar: {by_reuse['similar']} tasks ({plan['flops_similar_percent']:.0f}% of FLOPs) "
        f"start from their neighbours' records; new: {by_reuse['none']}\n"
        f"trial budget: {plan['trial_budget']}, spread by each task's share of the time "
        "and its room to improve (column trials)",
        highlight=False,
    )


def _compile_on_farm(options: CompileOptions) -> tuple[Path, Path, dict[str, Any]]:
    from tuning_db.sql_database import open_engine
    from workers.farm_client import download, follow, job_snapshot, submit_compile
    from workers.job_display import JobProgressDisplay

    engine = open_engine(options.database_url)
    job_id = submit_compile(options, engine=engine)
    if console.is_terminal:
        console.print(f"submitted job {job_id}")
    display = JobProgressDisplay(console, job_id, label="tuning on the farm")
    try:
        job = follow(engine, job_id, on_update=lambda job: display.show(job_snapshot(job)))
    except KeyboardInterrupt:
        _fail(
            f"stopped following job {job_id}; it keeps running "
            f"(tunefarm jobs cancel {job_id} stops it)",
            130,
        )
    finally:
        display.close()
    if job.state == "failed":
        _fail(
            f"job {job_id} failed: {job.error}",
            EXIT_USER_ERROR if job.error_kind == "user" else EXIT_INTERNAL_ERROR,
        )
    if job.state == "cancelled":
        _fail(f"job {job_id} was cancelled", EXIT_INTERNAL_ERROR)
    library_path, manifest_path = download(engine, job, options.out_dir)
    assert job.manifest is not None
    return library_path, manifest_path, job.manifest


jobs_app = typer.Typer(help="Farm jobs: list, show, cancel.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list_command(db: Annotated[str | None, typer.Option(help="Database URL.")] = None) -> None:
    """The newest jobs, one line each."""
    from tuning_db import job_store
    from tuning_db.sql_database import open_engine

    for job in job_store.list_jobs(open_engine(_database_url(db))):
        trials = job.progress.get("trials", 0)
        print(f"{job.id}  {job.state:<10} {job.model_name}  trials {trials}  {job.error or ''}")


@jobs_app.command("show")
def jobs_show_command(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """The job's state, progress and result as JSON."""
    from dataclasses import asdict

    from tuning_db import job_store
    from tuning_db.sql_database import open_engine

    job = job_store.get_job(open_engine(_database_url(db)), job_id)
    if job is None:
        _fail(f"no job {job_id}")
    print(json.dumps(asdict(job), indent=2, default=str))


@jobs_app.command("cancel")
def jobs_cancel_command(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Stop a job: no new trials after the batch in flight."""
    from tuning_db import job_store
    from tuning_db.sql_database import open_engine

    job = job_store.request_cancel(open_engine(_database_url(db)), job_id)
    if job is None:
        _fail(f"no job {job_id}")
    print(f"job {job_id}: {job.state}, cancel requested")


@app.command("worker")
def worker_command(
    target: Annotated[str, typer.Option(help="The target this worker measures for.")] = "llvm",
    device: Annotated[
        int | None, typer.Option(help="GPU index to pin this worker to (CUDA_VISIBLE_DEVICES).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Warm build-and-time processes in this worker.")
    ] = 1,
    jobs: Annotated[
        bool, typer.Option("--jobs", help="Be a coordinator on the jobs queue instead.")
    ] = False,
) -> None:
    """Start a measure worker for TARGET's queue on the farm's broker (TUNEFARM_BROKER_URL)."""
    from workers.worker_main import run_coordinator_worker, run_measure_worker

    if jobs:
        run_coordinator_worker()
        return
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


# -- the HTTP API: its server, its clients, its administration --------------------------------
# The CLI is the top layer: `serve` and `admin` reach into api/, nothing below imports it.

admin_app = typer.Typer(help="Teams and API tokens (run where TUNEFARM_DATABASE_URL points).")
app.add_typer(admin_app, name="admin")

ApiUrlOption = Annotated[
    str | None, typer.Option("--api-url", help="The API (default: TUNEFARM_API_URL).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="A team token (default: TUNEFARM_API_TOKEN).")
]


@admin_app.command("create-team")
def create_team_command(
    name: Annotated[str, typer.Argument(help="The team's name: a-z, 0-9, '-' and '_'.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Create a team and print its first token, once: only its hash is stored."""
    from api.errors import ApiError
    from api.services.teams import create_team
    from tuning_db.sql_database import open_engine

    try:
        team, token = create_team(open_engine(_database_url(db)), name)
    except ApiError as err:
        _fail(err.message)
    error_console.print(f"team {team.name} created; its token is shown once:")
    print(token)


@admin_app.command("create-token")
def create_token_command(
    team: Annotated[str, typer.Argument(help="The team's name.")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Print a new token for TEAM, once: only its hash is stored."""
    from api.errors import ApiError
    from api.services.teams import create_token
    from tuning_db.sql_database import open_engine

    try:
        token = create_token(open_engine(_database_url(db)), team)
    except ApiError as err:
        _fail(err.message)
    error_console.print(f"a new token for team {team}, shown once:")
    print(token)


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Default: TUNEFARM_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: TUNEFARM_API_PORT.")] = None,
) -> None:
    """Run the HTTP API under uvicorn (OpenAPI at /docs)."""
    import uvicorn

    settings = Settings()
    uvicorn.run(
        "api.app:app_from_environment",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=settings.api_workers,
        log_level="info",
    )


@app.command("submit")
def submit_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.")],
    target: Annotated[str, typer.Option(help="llvm, cuda, 'cuda -arch=sm_90', or JSON.")] = "llvm",
    trials: Annotated[int, typer.Option(help="Total tuning trials.")] = 64,
    fp16: Annotated[bool, typer.Option(help="Convert to float16 mixed precision.")] = False,
    layout: Annotated[str, typer.Option(help="NHWC, NCHW or auto.")] = "auto",
    max_trials_per_task: Annotated[int | None, typer.Option(help="Cap per task.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the search.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job's events until it ends.")
    ] = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload MODEL to the API and submit a job; print the job's id."""
    from workers.api_client import ApiClient, ApiClientError, status_snapshot
    from workers.job_display import JobProgressDisplay

    settings = Settings()
    if not model.is_file():
        _fail(f"{model}: no such file")
    options: dict[str, Any] = {"fp16": fp16, "layout": layout}
    if max_trials_per_task is not None:
        options["max_trials_per_task"] = max_trials_per_task
    if seed is not None:
        options["seed"] = seed
    try:
        with ApiClient(api_url or settings.api_url, token or settings.api_token) as client:
            uploaded = client.upload_model(model)
            job = client.submit_job(uploaded["id"], target=target, trials=trials, options=options)
            print(job["id"])
            if not wait:
                return
            display = JobProgressDisplay(console, job["id"], label="tuning")
            final = job
            try:
                for _event, status in client.events(job["id"]):
                    display.show(status_snapshot(status))
                    final = status
            finally:
                display.close()
    except ApiClientError as err:
        _fail(str(err), EXIT_USER_ERROR if err.is_user_error else EXIT_INTERNAL_ERROR)
    if final["state"] == "failed":
        error = final.get("error") or {}
        code = EXIT_USER_ERROR if error.get("kind") == "user" else EXIT_INTERNAL_ERROR
        _fail(f"job {final['id']} failed: {error.get('message')}", code)
    if final["state"] == "cancelled":
        _fail(f"job {final['id']} was cancelled", EXIT_INTERNAL_ERROR)
    latency = final.get("best_latency_ms")
    print(f"job {final['id']}: {final['state']}, tuned p50 {latency} ms")


@app.command("download")
def download_command(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    out: Annotated[Path, typer.Option(help="Folder for model.so and manifest.json.")] = Path("out"),
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download a job's library and manifest; the library's sha256 must match the manifest."""
    from workers.api_client import ApiClient, ApiClientError

    settings = Settings()
    out.mkdir(parents=True, exist_ok=True)
    library = out / "model.so"
    try:
        with ApiClient(api_url or settings.api_url, token or settings.api_token) as client:
            manifest = client.manifest(job_id)
            sha256 = client.download_artifact(job_id, library)
    except ApiClientError as err:
        _fail(str(err), EXIT_USER_ERROR if err.is_user_error else EXIT_INTERNAL_ERROR)
    expected = manifest["library"]["sha256"]
    if sha256 != expected:
        library.unlink(missing_ok=True)
        _fail(
            f"the downloaded library's sha256 {sha256} is not the manifest's {expected}; "
            "nothing was kept",
            EXIT_INTERNAL_ERROR,
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"library:  {library} (sha256 {sha256}, verified)")
    print(f"manifest: {out / 'manifest.json'}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main() -> None:
    # Before TVM starts its thread pool: libraries, trials and timings use every core.
    from tuner.cpu_threads import use_physical_cores

    use_physical_cores()
    try:
        app()
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
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


if __name__ == "__main__":
    main()
