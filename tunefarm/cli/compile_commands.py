"""``tunefarm compile``, ``plan`` and ``sample-model``: a model in, a library or a plan out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from tunefarm.cli.app import (
    EXIT_INTERNAL_ERROR,
    DatabaseOption,
    Fp16Option,
    LayoutOption,
    ModelArgument,
    SeedOption,
    TargetOption,
    Tf32Option,
    VendorKernelsOption,
    app,
    console,
    database_url,
    error_console,
    fail,
    first_line,
)
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db.engine import DatabaseUrlError

if TYPE_CHECKING:
    from tunefarm.tuner.compile_job import CompileOptions


@app.command("compile")
def compile_command(
    model: ModelArgument,
    target: TargetOption = "llvm",
    trials: Annotated[int, typer.Option(help="Total tuning trials for the missing tasks.")] = 64,
    out: Annotated[Path, typer.Option(help="Where model.so and manifest.json go.")] = Path("out"),
    db: DatabaseOption = None,
    fp16: Fp16Option = False,
    vendor_kernels: VendorKernelsOption = False,
    tf32: Tf32Option = False,
    cuda_graph: Annotated[
        bool | None,
        typer.Option(
            "--cuda-graph/--no-cuda-graph",
            help="Replay the model as one CUDA graph (default: on for CUDA targets).",
        ),
    ] = None,
    layout: LayoutOption = "auto",
    max_trials_per_task: Annotated[
        int | None, typer.Option(help="Cap per task (default: an even share of --trials).")
    ] = None,
    seed: SeedOption = None,
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
        from tunefarm.tuner.compile_job import CompileOptions, compile_model
        from tunefarm.tuner.console_progress import ConsoleObserver

        spec = JobSpec.of(
            target,
            trials,
            max_trials_per_task=max_trials_per_task,
            layout=layout,
            fp16=fp16,
            vendor_kernels=vendor_kernels,
            tf32=tf32,
            cuda_graph=cuda_graph,
            seed=seed,
            warm_start=warm_start,
            baseline=baseline,
        )
        options = CompileOptions(
            model_path=model,
            spec=spec,
            out_dir=out,
            database_url=db or settings.resolved_database_url(),
            workers=workers,
            measure_timeout_sec=settings.measure_timeout_sec,
            max_model_bytes=settings.max_model_bytes,
            verbose=verbose,
        )
        report_path = None
        if farm:
            library_path, manifest_path, manifest = _compile_on_farm(options)
        else:
            result = compile_model(options, observer=ConsoleObserver(console))
            library_path, manifest_path = result.library_path, result.manifest_path
            manifest = result.manifest
            report_path = result.report_path
    except (UserInputError, DatabaseUrlError) as err:
        fail(str(err))
    except SQLAlchemyError as err:
        fail(f"database error: {first_line(err)}", EXIT_INTERNAL_ERROR)
    from tunefarm.tuner.library_report import LibraryReport

    coverage = manifest["coverage_before_tuning"]
    print(f"library:  {library_path}")
    print(f"manifest: {manifest_path}")
    if report_path is not None:
        print(f"report:   {report_path}")
    print(
        f"trials run: {manifest['tuning']['trials_run']}, coverage before tuning: "
        f"{coverage['tasks_percent']:.0f}% of tasks, {coverage['flops_percent']:.0f}% of FLOPs"
    )
    for line in LibraryReport.from_manifest(manifest).summary_lines():
        print(line)


@app.command("plan")
def plan_command(
    model: ModelArgument,
    target: TargetOption = "llvm",
    trials: Annotated[int, typer.Option(help="The --trials a compile would get.")] = 64,
    max_trials_per_task: Annotated[
        int | None, typer.Option(help="The --max-trials-per-task a compile would get.")
    ] = None,
    db: DatabaseOption = None,
    fp16: Fp16Option = False,
    layout: LayoutOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """What the database already covers for MODEL on TARGET, and what a compile would tune."""
    from tunefarm.tuner.coverage_plan import plan_model

    try:
        spec = JobSpec.of(
            target, trials, max_trials_per_task=max_trials_per_task, layout=layout, fp16=fp16
        )
        plan = plan_model(model, spec, database_url=database_url(db))
    except (UserInputError, DatabaseUrlError) as err:
        fail(str(err))
    except SQLAlchemyError as err:
        fail(f"database error: {first_line(err)}", EXIT_INTERNAL_ERROR)
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
    if plan["trial_budget"] > 0 and plan["uncovered_without_trials"]:
        console.print(
            f"{plan['uncovered_without_trials']} tasks without a record of their own get no "
            f"trial; trials for each need --trials {plan['first_round_trials']} or more",
            highlight=False,
        )


def _compile_on_farm(options: CompileOptions) -> tuple[Path, Path, dict[str, Any]]:
    from tunefarm.cli.farm_client import download, submit_compile
    from tunefarm.cli.jobs import follow_to_the_end
    from tunefarm.tuning_db.sql_database import open_engine

    engine = open_engine(options.database_url)
    job_id = submit_compile(
        options, engine=engine, say=lambda note: error_console.print(note, highlight=False)
    )
    if console.is_terminal:
        console.print(f"submitted job {job_id}")
    job = follow_to_the_end(engine, job_id)
    library_path, manifest_path = download(engine, job, options.out_dir)
    assert job.manifest is not None
    return library_path, manifest_path, job.manifest


@app.command("sample-model")
def sample_model_command(
    path: Annotated[Path, typer.Argument(help="Where to write the .onnx file.")],
    name: Annotated[str, typer.Option(help="Which sample: tiny-cnn.")] = "tiny-cnn",
) -> None:
    """Write a small ONNX model that tunes in seconds (for trying tunefarm out)."""
    from tunefarm.tuner.sample_models import write_sample

    try:
        write_sample(name, path)
    except KeyError as err:
        fail(str(err.args[0]))
    print(f"wrote {path}")
