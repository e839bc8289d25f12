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


def compile_untuned(mod: IRModule, *, target: Target) -> Executable:
    """The default pipeline alone: TVM's default schedules (dlight on GPUs), no records."""
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=target)


def compile_tuned(mod: IRModule, *, target: Target, database: Database) -> Executable:
    """Apply the best record of every task in ``database``, then the default pipeline."""
    with target, database, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        return tvm.compile(mod, target=target)


def export_library(executable: Executable, path: Path) -> str:
    """Write the shared library and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()
