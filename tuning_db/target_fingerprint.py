"""Target fingerprints: what must match for a measured schedule to be trusted again.

A fingerprint is the target JSON (without its host), the CPU features its ``mcpu`` implies or
the GPU arch, and the TVM version. Records are filed under the sha256 of it, so a record measured
for ``znver5`` is never offered to ``skylake``, nor one from another TVM release.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import tvm
from tvm.target import Target


@dataclass(frozen=True)
class TargetFingerprint:
    key: str
    """sha256 hex of ``fingerprint_json``."""
    target_json: str
    fingerprint_json: str

    @property
    def details(self) -> dict[str, Any]:
        return dict(json.loads(self.fingerprint_json))


_IGNORED_TARGET_FIELDS = ("host", "tag")


def target_as_dict(target: Target) -> dict[str, Any]:
    """The target's attributes as plain JSON values, without host and tag."""
    exported = json.loads(str(target))
    return {k: v for k, v in exported.items() if k not in _IGNORED_TARGET_FIELDS}


def _hardware(target: Target) -> dict[str, Any]:
    kind = target.kind.name
    if kind == "llvm":
        from tvm.target import codegen  # the LLVM codegen is in every apache-tvm wheel

        features = sorted(str(f) for f in codegen.llvm_get_cpu_features(target))
        return {"cpu": str(target.attrs.get("mcpu", "generic")), "cpu_features": features}
    if kind == "cuda":
        return {"gpu_arch": str(target.attrs.get("arch", ""))}
    return {}


_CACHE: dict[str, TargetFingerprint] = {}


def fingerprint(target: Target) -> TargetFingerprint:
    """The fingerprint of ``target`` for this TVM build (cached per target string)."""
    cache_key = str(target)
    cached = _CACHE.get(cache_key)
    if cached is not None:
        return cached
    target_dict = target_as_dict(target)
    details = {
        "target": target_dict,
        "hardware": _hardware(target),
        "tvm_version": tvm.__version__,
    }
    fingerprint_json = json.dumps(details, sort_keys=True)
    result = TargetFingerprint(
        key=hashlib.sha256(fingerprint_json.encode()).hexdigest(),
        target_json=json.dumps(target_dict, sort_keys=True),
        fingerprint_json=fingerprint_json,
    )
    _CACHE[cache_key] = result
    return result
