"""``tunefarm submit`` and ``tunefarm download``: jobs through the HTTP API."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tunefarm.cli.app import (
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    ApiUrlOption,
    Fp16Option,
    JobIdArgument,
    LayoutOption,
    ModelArgument,
    SeedOption,
    TargetOption,
    TokenOption,
    app,
    console,
    error_console,
    fail,
)
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.settings import Settings

if TYPE_CHECKING:
    from tunefarm.cli.api_client import ApiClient


@app.command("submit")
def submit_command(
    model: ModelArgument,
    target: TargetOption = "llvm",
    trials: Annotated[int, typer.Option(help="Total tuning trials.")] = 64,
    fp16: Fp16Option = False,
    layout: LayoutOption = "auto",
    max_trials_per_task: Annotated[int | None, typer.Option(help="Cap per task.")] = None,
    seed: SeedOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job's events until it ends.")
    ] = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload MODEL to the API and submit a job; print the job's id."""
    from tunefarm.cli.api_client import ApiClient, ApiClientError, status_snapshot
    from tunefarm.cli.job_display import JobProgressDisplay

    settings = Settings()
    if not model.is_file():
        fail(f"{model}: no such file")
    try:
        spec = JobSpec.of(
            target,
            trials,
            fp16=fp16,
            layout=layout,
            max_trials_per_task=max_trials_per_task,
            seed=seed,
        )
    except UserInputError as err:
        fail(str(err))
    try:
        with ApiClient(api_url or settings.api_url, token or settings.api_token) as client:
            uploaded = _upload(client, model, max_bytes=settings.max_model_bytes)
            job = client.submit_job(uploaded["id"], spec)
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
        fail(str(err), EXIT_USER_ERROR if err.is_user_error else EXIT_INTERNAL_ERROR)
    if final["state"] == "failed":
        error = final.get("error") or {}
        code = EXIT_USER_ERROR if error.get("kind") == "user" else EXIT_INTERNAL_ERROR
        fail(f"job {final['id']} failed: {error.get('message')}", code)
    if final["state"] == "cancelled":
        fail(f"job {final['id']} was cancelled", EXIT_INTERNAL_ERROR)
    latency = final.get("best_latency_ms")
    print(f"job {final['id']}: {final['state']}, tuned p50 {latency} ms")


def _upload(client: ApiClient, model: Path, *, max_bytes: int) -> dict[str, Any]:
    """Upload the model; a ``.pt2`` program goes as ONNX, converted here (the server never
    loads a ``.pt2`` file)."""
    from tunefarm.cli.farm_client import onnx_for_the_farm

    with tempfile.TemporaryDirectory(prefix="tunefarm-submit-") as scratch:
        try:
            upload = onnx_for_the_farm(
                model,
                Path(scratch),
                max_bytes=max_bytes,
                say=lambda note: error_console.print(note, highlight=False),
            )
        except UserInputError as err:
            fail(str(err))
        return client.upload_model(upload)


@app.command("download")
def download_command(
    job_id: JobIdArgument,
    out: Annotated[Path, typer.Option(help="Folder for model.so and manifest.json.")] = Path("out"),
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download a job's library and manifest; the library's sha256 must match the manifest."""
    from tunefarm.cli.api_client import ApiClient, ApiClientError

    settings = Settings()
    out.mkdir(parents=True, exist_ok=True)
    library = out / "model.so"
    try:
        with ApiClient(api_url or settings.api_url, token or settings.api_token) as client:
            manifest = client.manifest(job_id)
            sha256 = client.download_artifact(job_id, library)
    except ApiClientError as err:
        fail(str(err), EXIT_USER_ERROR if err.is_user_error else EXIT_INTERNAL_ERROR)
    expected = manifest["library"]["sha256"]
    if sha256 != expected:
        library.unlink(missing_ok=True)
        fail(
            f"the downloaded library's sha256 {sha256} is not the manifest's {expected}; "
            "nothing was kept",
            EXIT_INTERNAL_ERROR,
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"library:  {library} (sha256 {sha256}, verified)")
    print(f"manifest: {out / 'manifest.json'}")
