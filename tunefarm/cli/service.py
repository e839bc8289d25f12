"""``tunefarm worker`` and ``tunefarm serve``: the farm's processes and the HTTP API's server."""

from __future__ import annotations

from typing import Annotated

import typer

from tunefarm.cli.app import app, fail
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.settings import Settings


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
    from tunefarm.workers.worker_main import run_coordinator_worker, run_measure_worker

    try:
        if jobs:
            run_coordinator_worker()
            return
        run_measure_worker(
            target,
            device=device,
            concurrency=concurrency,
            timeout_sec=Settings().measure_timeout_sec,
        )
    except UserInputError as err:
        fail(str(err))


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Default: TUNEFARM_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: TUNEFARM_API_PORT.")] = None,
) -> None:
    """Run the HTTP API under uvicorn (OpenAPI at /docs)."""
    import uvicorn

    settings = Settings()
    uvicorn.run(
        "tunefarm.api.app:app_from_environment",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=settings.api_workers,
        log_level="info",
    )
