"""Target fingerprints and target classes: which measured schedules can be trusted again.

A fingerprint is the target JSON (without its host), the CPU features its ``mcpu`` implies or
the GPU arch, and the TVM version. Records are filed under the sha256 of it, so a record measured
for ``znver5`` is never offered to ``skylake``, nor one from another TVM release.

A target class groups the fingerprints whose schedules are valid and about as fast on each
other's machines: ``cuda/sm_90`` (any GPU of that arch with the default launch limits, an H100
or an H200, however its target JSON spells the L2 size or core count), ``llvm/znver4/<hash of the
CPU features>`` (any core count). A record of another fingerprint of the same class *and the same
TVM version* may be built as is, and is marked as such; the class itself leaves the version out,
so a lookup also tells "same machine kind, other TVM release" apart from "other architecture".
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

    @property
    def target_class(self) -> str:
        return class_of_fingerprint(self.details)

    @property
    def tvm_version(self) -> str:
        return str(self.details.get("tvm_version", ""))


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


# The launch limits a CUDA schedule is checked against (VerifyGPUCode) and that TVM's own cuda
# targets and ``tuner.targets.parse_target`` set. A schedule tuned under larger limits may be
# invalid under smaller ones, so other limits make another class.
_CUDA_DEFAULT_LIMITS = {
    "max_threads_per_block": 1024,
    "max_shared_memory_per_block": 49152,
    "thread_warp_size": 32,
}


def class_of_fingerprint(details: dict[str, Any]) -> str:
    """The target class of a fingerprint (``TargetFingerprint.details``)."""
    target: dict[str, Any] = details.get("target", {})
    hardware: dict[str, Any] = details.get("hardware", {})
    kind = str(target.get("kind", "unknown"))
    if kind == "cuda":
        # sm_90a stays apart from sm_90: its code may use arch-specific instructions (wgmma).
        arch = str(hardware.get("gpu_arch") or target.get("arch") or "unknown")
        limits = {name: target.get(name, default) for name, default in _CUDA_DEFAULT_LIMITS.items()}
        if limits == _CUDA_DEFAULT_LIMITS:
            return f"cuda/{arch}"
        spelled = "-".join(f"{name}={limits[name]}" for name in sorted(limits))
        return f"cuda/{arch}/{spelled}"
    if kind == "llvm":
        cpu = str(hardware.get("cpu", "generic"))
        features = {
            "mtriple": target.get("mtriple", ""),
            "cpu_features": sorted(hardware.get("cpu_features", [])),
        }
        digest = hashlib.sha256(json.dumps(features, sort_keys=True).encode()).hexdigest()
        return f"llvm/{cpu}/{digest[:12]}"
    # Other kinds: no class wider than the target itself.
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()
    return f"{kind}/{digest[:12]}"


def target_class(target: Target) -> str:
    """The class of ``target``: ``cuda/sm_90``, ``llvm/<mcpu>/<CPU features hash>``."""
    return fingerprint(target).target_class
