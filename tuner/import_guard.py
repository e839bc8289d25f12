"""Import an ONNX model once in a child process with limits, before the real import (issue 21).

"Import" here is TVM's importer and the constant folding after legalization that the pass
pipeline does, since both build tensors.

TVM's importer evaluates constant subgraphs while it imports, in the importing process: the
coordinator, the API server or the user's CLI. ``tensor_budget`` refuses the bombs that shape
inference can see; this is the line behind it, for what it cannot see. A forked child (cheap: it
shares the parent's loaded TVM) sets its address-space limit (``RLIMIT_AS``) to what it
already maps plus ``memory_bytes``, silences stdout and stderr (TVM's frontend prints the IR of
an operator it fails on), and imports. If it runs out of memory, crashes or overruns
``seconds``, it is the child that dies and the caller gets one ``ModelValidationError``; if it
succeeds, the caller imports for real, knowing the import fits.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection

from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.model_validation import ValidatedModel

MEMORY_WORDS = ("MemoryError", "bad_alloc", "Unable to allocate", "Cannot allocate memory")
"""What a failed allocation says: Python's, numpy's or TVM's C++ (``std::bad_alloc``)."""


def probe_import(validated: ValidatedModel, *, memory_bytes: int, seconds: float) -> None:
    """Raise ``ModelValidationError`` if importing ``validated`` would exceed the limits or
    crash."""
    if sys.platform != "linux":
        return  # fork and RLIMIT_AS as used here are Linux's; elsewhere the import runs as is
    path = validated.path
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(validated, memory_bytes, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(seconds):
            raise ModelValidationError(
                f"{path}: importing it took more than {seconds:g} s "
                "(TUNEFARM_IMPORT_TIMEOUT_SEC); it was stopped"
            )
        try:
            outcome, message = receive.recv()
        except EOFError:
            outcome, message = "crashed", ""
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if outcome == "ok":
        return
    if outcome == "memory" or (outcome == "crashed" and child.exitcode == -signal.SIGKILL):
        raise ModelValidationError(
            f"{path}: importing it needs more than {_gib(memory_bytes)} of memory "
            "(TUNEFARM_IMPORT_MEMORY_BYTES)"
        )
    if outcome == "crashed":
        raise ModelValidationError(
            f"{path}: TVM's ONNX importer crashed on it (exit {child.exitcode})"
        )
    raise ModelValidationError(message)


def _child(validated: ValidatedModel, memory_bytes: int, send: Connection) -> None:
    outcome: tuple[str, str]
    try:
        confine(memory_bytes)
        import tvm
        from tvm import relax

        from tunefarm.tuner.onnx_import import import_onnx

        mod = import_onnx(validated)
        # The pipeline folds constants too, once legalized (a Tile of a constant is built there).
        with tvm.target.Target("llvm"), tvm.transform.PassContext(opt_level=3):
            tvm.transform.Sequential(
                [relax.transform.LegalizeOps(), relax.transform.FoldConstant()]
            )(mod)
        outcome = ("ok", "")
    except BaseException as err:  # anything the importer raises: the caller's one line
        if is_out_of_memory(err):
            outcome = ("memory", "")
        elif isinstance(err, ModelValidationError):
            outcome = ("error", str(err))
        else:
            text = f"{type(err).__name__}: {err}"
            outcome = (
                "error",
                f"{validated.path}: TVM's ONNX importer failed: {text.splitlines()[-1]}",
            )
    try:
        send.send(outcome)
    finally:
        # Not the parent's atexit handlers, database pools or test hooks: a fork leaves at once.
        os._exit(0)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed, whatever raised it."""
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, MemoryError) or any(word in text for word in MEMORY_WORDS)


def confine(memory_bytes: int) -> None:
    """In a child that imports models: stdout and stderr to /dev/null (TVM's frontend prints
    the IR of an operator it fails on), and at most ``memory_bytes`` more address space."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    _limit_address_space(memory_bytes)


def _limit_address_space(extra_bytes: int) -> None:
    """What the child maps already (a forked TVM maps a lot) plus ``extra_bytes``."""
    mapped = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    limit = mapped + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"
