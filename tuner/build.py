"""Compile the model with the best schedules the database holds, and package it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.runtime import Executable
from tvm.s_tir.meta_schedule.database import Database
from tvm.target import Target

from tunefarm.tuner.targets import is_gpu
from tunefarm.tuner.vendor_kernels import VendorToolchain, link_arguments


def use_cuda_graph(requested: bool | None, target: Target) -> bool:
    """CUDA graphs replay the whole model as one launch; ``None`` means on for GPU targets."""
    if requested is None:
        return is_gpu(target) and target.kind.name == "cuda"
    return requested and target.kind.name == "cuda"


def _pass_context(cuda_graph: bool) -> tvm.transform.PassContext:
    # RewriteCUDAGraph is in every CUDA build pipeline; this config is what switches it on.
    return tvm.transform.PassContext(
        opt_level=3, config={"relax.backend.use_cuda_graph": cuda_graph}
    )


def compile_untuned(mod: IRModule, *, target: Target, cuda_graph: bool = False) -> Executable:
    """The default pipeline alone: TVM's default schedules (dlight on GPUs), no records."""
    with target, _pass_context(cuda_graph):
        return tvm.compile(mod, target=target)


def compile_tuned(
    mod: IRModule, *, target: Target, database: Database, cuda_graph: bool = False
) -> Executable:
    """Apply the best record of every task in ``database``, then the default pipeline."""
    with target, database, _pass_context(cuda_graph):
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        return tvm.compile(mod, target=target)


def export_library(
    executable: Executable, path: Path, *, vendor: VendorToolchain | None = None
) -> str:
    """Write the shared library and return its sha256; with ``vendor``, the shim is linked in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    link = link_arguments(vendor) if vendor is not None else {}
    executable.export_library(str(path), **link)
    return hashlib.sha256(path.read_bytes()).hexdigest()
