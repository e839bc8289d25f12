"""Ctrl-C during a compile (issue 19).

Python raises ``KeyboardInterrupt`` wherever the main thread is. During a search that is often
inside a Python callback that TVM's C++ called: the interrupt became a TVM error that the loop
took for a failing task (tuning went on), or crossed a C++ thread and ended in
``std::terminate`` (a segfault). So while the tuning loop runs (``cooperative``), the CLI's
handler only records the interrupt, and the loop stops at its next step; anywhere else it
raises as usual.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_requested = threading.Event()
_cooperative = threading.Event()


@contextlib.contextmanager
def cooperative() -> Iterator[None]:
    """While inside, an interrupt is recorded, not raised: the caller checks between steps."""
    _cooperative.set()
    try:
        yield
    finally:
        _cooperative.clear()


def in_cooperative_section() -> bool:
    return _cooperative.is_set()


def request() -> None:
    """Record an interrupt (the CLI's SIGINT handler calls it)."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def stop_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` here, in the loop, if the user asked to stop."""
    if _requested.is_set():
        raise KeyboardInterrupt
