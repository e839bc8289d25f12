"""The root of the ``tunefarm`` command line, and what its command groups share: the consoles,
the exit codes, the options several commands take, and how a command fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import typer.rich_utils
from rich.console import Console

from tunefarm.tuner.settings import Settings

HELP_WIDTH_PIPED = 120

if not sys.stdout.isatty() and not {"TERMINAL_WIDTH", "COLUMNS"} & set(os.environ):
    # Piped help (`tunefarm compile --help | less`) got Rich's 80 columns, where the long
    # option names leave the help text a narrow column and Rich cuts long words with "…".
    typer.rich_utils.MAX_WIDTH = HELP_WIDTH_PIPED

app = typer.Typer(
    name="tunefarm",
    help="Tune and compile ONNX and PyTorch models with TVM; every measurement goes into a SQL "
    "database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
error_console = Console(stderr=True)

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1

# Options more than one command takes, declared once.
ModelArgument = Annotated[
    Path, typer.Argument(help="The ONNX model file, or a torch.export program (.pt2).")
]
TargetOption = Annotated[
    str, typer.Option(help="llvm, cuda, 'cuda -arch=sm_90', or TVM target JSON.")
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(help="Database URL (default: SQLite in the data dir; TUNEFARM_DATABASE_URL)."),
]
Fp16Option = Annotated[bool, typer.Option(help="Convert to float16 mixed precision.")]
VendorKernelsOption = Annotated[
    bool,
    typer.Option(
        "--vendor-kernels",
        help="CUDA: run convolutions and matmuls with cuDNN and cuBLASLt "
        r"(pip install 'tunefarm\[vendor]').",
    ),
]
Tf32Option = Annotated[
    bool,
    typer.Option(
        "--tf32",
        help="With --vendor-kernels: fp32 convolutions and matmuls may use TF32 tensor cores, "
        "as torch's cuDNN convolutions do by default.",
    ),
]
LayoutOption = Annotated[str, typer.Option(help="NHWC, NCHW or auto.")]
SeedOption = Annotated[int | None, typer.Option(help="Seed of the search.")]
JobIdArgument = Annotated[str, typer.Argument(help="The job's id.")]
ApiUrlOption = Annotated[
    str | None, typer.Option("--api-url", help="The API (default: TUNEFARM_API_URL).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="A team token (default: TUNEFARM_API_TOKEN).")
]


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def database_url(db: str | None) -> str:
    return db or Settings().resolved_database_url()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def counted(number: int, noun: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
