"""Turn what a user types as ``--target`` into a TVM target that tuning can use.

Accepted: friendly names (``llvm``, ``cuda``, ``cuda -arch=sm_90``, ``llvm -mcpu=skylake``) and
TVM's JSON form (``{"kind": "cuda", "arch": "sm_90"}``). A CPU target without ``mcpu`` is the
host CPU, and without ``num-cores`` gets the host's core count, because MetaSchedule needs both
to generate code that is fast here.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import tvm
from tvm.target import Target

from tunefarm.tuner.cpu_threads import physical_cores
from tunefarm.tuner.errors import TargetError

SUPPORTED_KINDS = ("llvm", "cuda")


def parse_target(text: str) -> Target:
    """Parse ``text`` as a friendly target string or TVM JSON; raise ``TargetError`` if bad."""
    text = text.strip()
    if not text:
        raise TargetError("the target is empty; try --target llvm or --target cuda")
    if text.startswith(("{", "[")):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise TargetError(f"the target JSON does not parse: {err.msg}") from err
        if not isinstance(config, dict):
            raise TargetError("the target JSON must be an object with a 'kind'")
    else:
        config = _parse_friendly(text)
    kind = config.get("kind")
    if kind not in SUPPORTED_KINDS:
        raise TargetError(
            f"unknown target kind {kind!r}; tunefarm supports {', '.join(SUPPORTED_KINDS)}"
        )
    if kind == "llvm" and "mcpu" in config:
        _check_cpu_name(text, config)
    config = _with_defaults(config)
    try:
        return Target(config)
    except Exception as err:
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise TargetError(f"TVM rejects the target {text!r}: {message}") from err


def _check_cpu_name(text: str, config: dict[str, Any]) -> None:
    """LLVM takes any ``mcpu``, warns on stderr and generates generic code: refuse a name it
    does not know, before anything is tuned or filed under it."""
    import difflib

    from tvm.target import codegen

    without = {key: value for key, value in config.items() if key != "mcpu"}
    try:
        known = [str(name) for name in codegen.llvm_get_cpu_archlist(Target(without))]
    except Exception:  # the triple's own problem, reported by the Target below
        return
    cpu = str(config["mcpu"])
    if known and cpu not in known:
        close = difflib.get_close_matches(cpu, known, n=4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise TargetError(
            f"LLVM knows no CPU {cpu!r} in {text!r}; {hint}it knows {len(known)}, "
            f"such as {', '.join(known[:6])}"
        )


def _parse_friendly(text: str) -> dict[str, Any]:
    try:
        words = shlex.split(text)
    except ValueError as err:  # an unbalanced quote
        raise TargetError(f"cannot read the target {text!r}: {err}") from err
    config: dict[str, Any] = {"kind": words[0]}
    for word in words[1:]:
        if not word.startswith("-") or "=" not in word:
            raise TargetError(f"cannot read target option {word!r}; write options as -key=value")
        key, value = word.lstrip("-").split("=", 1)
        config[key] = int(value) if value.isdigit() else value
    return config


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if config["kind"] == "llvm":
        from tvm.target import codegen

        config.setdefault("mcpu", str(codegen.llvm_get_system_cpu()))
        config.setdefault("num-cores", physical_cores())
    elif config["kind"] == "cuda":
        config.setdefault("arch", _local_cuda_arch() or "sm_90")
        config.setdefault("max_threads_per_block", 1024)
        config.setdefault("max_shared_memory_per_block", 49152)
        config.setdefault("thread_warp_size", 32)
        config.setdefault("host", {"kind": "llvm"})
    return config


def _local_cuda_arch() -> str | None:
    device = tvm.cuda(0)
    if not device.exist:
        return None
    return "sm_" + str(device.compute_version).replace(".", "")


def is_gpu(target: Target) -> bool:
    return "gpu" in [str(key) for key in target.keys]


def runtime_device(target: Target, index: int = 0) -> tvm.runtime.Device:
    """The runtime device that runs code built for ``target`` (``llvm`` runs on ``cpu``)."""
    kind = target.kind.name
    return tvm.runtime.device("cpu" if kind == "llvm" else kind, index)
