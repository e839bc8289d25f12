"""Ctrl-C during a compile (issue 19).

Python raises ``KeyboardInterrupt`` wherever the main thread is. During a compile that is
often inside a Python callback that TVM's C++ called: the interrupt became a TVM error that the
loop took for a failing task (tuning went on), or crossed a C++ thread and ended in
``std::terminate`` (a segfault). So while a compile runs (``cooperative``: all of
``compile_model``), the CLI's handler only records the interrupt, and the compile stops at its
next step (a tuning batch, a default schedule's result, a stage); anywhere else, and at a
second Ctrl-C, it raises as usual.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_requested = threading.Event()
_depth = 0  # cooperative sections nest: a compile holds one, its tuning loop another


@contextlib.contextmanager
def cooperative() -> Iterator[None]:
    """While inside, an interrupt is recorded, not raised: the caller checks between steps."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def in_cooperative_section() -> bool:
    return _depth > 0


def request() -> None:
    """Record an interrupt (the CLI's SIGINT handler calls it)."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def stop_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` here, in the loop, if the user asked to stop."""
    if _requested.is_set():
        raise KeyboardInterrupt
