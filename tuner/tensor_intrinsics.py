"""Register only the tensor intrinsics the target can use.

``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` parses the TVMScript of
every intrinsic of every backend, paid by every compile. The x86 intrinsics alone take 0.13 s,
CUDA's 11 s on a 2-core machine (68 s before ``tuning_db.tvmscript_import``). So before the
first ``TuneContext`` we put an empty package in ``sys.modules`` and import only the target's
own module; later imports of other submodules (``tvm.s_tir.tensor_intrin.cuda``) still work
through the package's path.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import types

from tvm.target import Target

from tunefarm.tuning_db.tvmscript_import import getmodule_remembers_misses

PACKAGE = "tvm.s_tir.tensor_intrin"


def modules_for(target: Target) -> list[str] | None:
    """The intrinsic modules ``target`` can tensorize with; None means all of them."""
    kind = target.kind.name
    if kind == "cuda":
        return ["cuda"]
    if kind == "llvm":
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64", "i686"):
            return ["x86"]
        if machine in ("aarch64", "arm64"):
            return ["arm_cpu"]
        if machine.startswith("riscv"):
            return ["riscv_cpu"]
    return None


def load_tensor_intrinsics(target: Target) -> None:
    """Register the target's tensor intrinsics without importing every backend's."""
    wanted = modules_for(target)
    if wanted is None or (PACKAGE in sys.modules and not _is_partial(sys.modules[PACKAGE])):
        importlib.import_module(PACKAGE)
        return
    if PACKAGE not in sys.modules:
        import tvm.s_tir

        package = types.ModuleType(PACKAGE, "Tensor intrinsics, loaded per target by tunefarm.")
        package.__path__ = [os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")]
        package.__package__ = PACKAGE
        package.__dict__["_tunefarm_partial"] = True
        sys.modules[PACKAGE] = package
    with getmodule_remembers_misses():
        for name in wanted:
            importlib.import_module(f"{PACKAGE}.{name}")


def _is_partial(module: types.ModuleType) -> bool:
    return bool(module.__dict__.get("_tunefarm_partial", False))
