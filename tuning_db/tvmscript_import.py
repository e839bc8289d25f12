"""Importing TVM modules written in TVMScript (the tensor intrinsics) without the slow part.

TVMScript's parser calls ``inspect.stack()`` for each function it parses. For every frame of the
import machinery (``<frozen importlib._bootstrap>``, a file of no module), ``inspect.getmodule``
scans all of ``sys.modules``: some 2,000 modules once torch is loaded (tvm_ffi loads it when it
is installed). Registering CUDA's 180 tensor intrinsics did that 16,000 times: 60-140 s, most of
the time before a GPU job's first trial came back (issue 16), and of any read of a tensorized
record in a fresh process.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def getmodule_remembers_misses() -> Iterator[None]:
    """While inside, ``inspect.getmodule`` remembers the files it found no module for.

    A miss is remembered until ``sys.modules`` grows, so every answer is the one the scan
    would give.
    """
    original = inspect.getmodule
    misses: dict[str, int] = {}

    def getmodule(object: Any, _filename: str | None = None) -> Any:
        if _filename is not None and misses.get(_filename) == len(sys.modules):
            return None
        module = original(object, _filename)
        if module is None and _filename is not None:
            misses[_filename] = len(sys.modules)
        return module

    inspect.getmodule = getmodule  # type: ignore[assignment]
    try:
        yield
    finally:
        inspect.getmodule = original
