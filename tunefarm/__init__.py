"""tunefarm from Python: compile a model into a library you call like the model.

import tunefarm
compiled = tunefarm.compile("model.onnx", target="llvm", trials=64)
outputs = compiled(image)          # numpy arrays (or torch tensors) in, the same kind out
compiled.manifest                  # the manifest the CLI writes
compiled.save("build/")            # model.so + manifest.json
again = tunefarm.load("build/")

The service's packages install beneath this one: ``tunefarm.tuner``, ``tunefarm.tuning_db``,
``tunefarm.workers`` and ``tunefarm.api``. In the source tree they stay at the top level (the
design card's layout) and the links in this folder point at them, so one import path serves a
checkout, an editable install and the wheel (which holds only ``tunefarm/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunefarm.compile_model import compile
    from tunefarm.compiled_model import CompiledModel, load
    from tunefarm.errors import TunefarmError

__all__ = ["CompiledModel", "TunefarmError", "compile", "load"]

# Resolved on first use: ``import tunefarm.api`` (the server, a worker) need not load TVM
# and torch through the front door.
_LAZY = {
    "compile": "tunefarm.compile_model",
    "CompiledModel": "tunefarm.compiled_model",
    "load": "tunefarm.compiled_model",
    "TunefarmError": "tunefarm.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tunefarm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
