"""``tunefarm.compile``: the CLI's compile, from Python, with the CLI's options."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tunefarm.compiled_model import CompiledModel
from tunefarm.errors import TunefarmError
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuning_db.engine import DatabaseUrlError


def compile(
    model: str | Path | Any,
    example_inputs: tuple[Any, ...] | None = None,
    *,
    target: str = "llvm",
    trials: int = 64,
    database: str | None = None,
    out_dir: str | Path | None = None,
    fp16: bool = False,
    layout: str = "auto",
    farm: bool = False,
    progress: bool = True,
    seed: int | None = None,
    baseline: bool = True,
    vendor_kernels: bool = False,
    tf32: bool = False,
) -> CompiledModel:
    """Tune and compile ``model`` for ``target``; return it as a callable.

    ``model`` is an ONNX file, a ``torch.export`` program (a ``.pt2`` file or an
    ``ExportedProgram``), or a ``torch.nn.Module`` with ``example_inputs`` (exported with
    ``torch.export`` at those shapes; export fp32 and let ``fp16`` convert). ``database`` is a
    SQLAlchemy URL (default: ``Settings``'s, as the CLI). ``out_dir`` keeps ``model.so`` and
    ``manifest.json`` (default: a new temporary folder). ``farm`` runs the job on the farm's
    workers (ONNX files only). ``vendor_kernels`` (CUDA) runs convolutions and matmuls with
    cuDNN and cuBLASLt; ``tf32`` lets its fp32 calls use TF32 tensor cores. Every failure the
    caller can fix is a ``TunefarmError`` with a one-line message.
    """
    from tunefarm.tuner.compile_job import CompileOptions
    from tunefarm.tuner.job_spec import JobSpec
    from tunefarm.tuner.settings import Settings

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="tunefarm-"))
    settings = Settings()
    try:
        model_path = _model_file(model, example_inputs, out)
        spec = JobSpec.of(
            target,
            trials,
            layout=layout,
            fp16=fp16,
            seed=seed,
            baseline=baseline,
            vendor_kernels=vendor_kernels,
            tf32=tf32,
        )
        options = CompileOptions(
            model_path=model_path,
            spec=spec,
            out_dir=out,
            database_url=database or settings.resolved_database_url(),
            measure_timeout_sec=settings.measure_timeout_sec,
            max_model_bytes=settings.max_model_bytes,
        )
        if farm:
            _compile_on_farm(options)
        else:
            _compile_here(options, progress=progress)
    except TunefarmError:
        raise
    except (UserInputError, DatabaseUrlError) as err:
        raise TunefarmError(str(err)) from None
    return CompiledModel(out)


def _compile_here(options: Any, *, progress: bool) -> None:
    from tunefarm.tuner.compile_job import SilentObserver, compile_model

    if progress:
        from rich.console import Console

        from tunefarm.tuner.console_progress import ConsoleObserver

        compile_model(options, observer=ConsoleObserver(Console(stderr=True)))
    else:
        compile_model(options, observer=SilentObserver())


def _compile_on_farm(options: Any) -> None:
    from tunefarm.cli.farm_client import download, follow, submit_compile
    from tunefarm.tuning_db.job_state import JobState
    from tunefarm.tuning_db.sql_database import open_engine

    engine = open_engine(options.database_url)
    job_id = submit_compile(options, engine=engine, say=lambda note: print(note, file=sys.stderr))
    job = follow(engine, job_id, on_update=lambda job: None)
    if job.state is not JobState.SUCCEEDED:
        raise TunefarmError(f"farm job {job_id} {job.state}: {job.error or 'no library'}")
    download(engine, job, options.out_dir)


def _model_file(model: Any, example_inputs: tuple[Any, ...] | None, out: Path) -> Path:
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise TunefarmError(f"{path}: no such model file")
        return path
    torch = sys.modules.get("torch")  # a torch model means torch is imported already
    if torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        return _exported(model, example_inputs, out / "model.pt2")
    raise TunefarmError(
        f"cannot compile a {type(model).__name__}: give an ONNX file, a .pt2 program, "
        "a torch.nn.Module or a torch.export.ExportedProgram"
    )


def _exported(model: Any, example_inputs: tuple[Any, ...] | None, path: Path) -> Path:
    """``model`` as a ``torch.export`` program saved at ``path`` (fp32, as exported)."""
    import torch

    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise TunefarmError("a torch.nn.Module needs example_inputs (a tuple of tensors)")
        if not isinstance(example_inputs, tuple):
            example_inputs = (example_inputs,)
        try:
            program = torch.export.export(model.eval(), example_inputs)
        except Exception as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            reason = lines[0] if lines else type(err).__name__
            raise TunefarmError(f"torch.export could not export the module: {reason}") from None
    elif isinstance(model, torch.export.ExportedProgram):
        program = model
    else:
        raise TunefarmError(
            f"cannot compile a {type(model).__name__}: give a torch.nn.Module or an ExportedProgram"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path
