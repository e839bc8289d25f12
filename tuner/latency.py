"""Whole-model latency and the output check against ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from tuner.model_validation import TensorSignature, ValidatedModel
from tuner.targets import runtime_device


@dataclass(frozen=True)
class LatencyReport:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples: int

    def as_dict(self) -> dict[str, float]:
        return {
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "samples": self.samples,
        }


def random_inputs(signatures: list[TensorSignature], *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = []
    for signature in signatures:
        dtype = np.dtype(signature.dtype)
        if np.issubdtype(dtype, np.floating):
            inputs.append(rng.standard_normal(signature.shape).astype(dtype))
        elif dtype == np.bool_:
            inputs.append(rng.integers(0, 2, signature.shape).astype(dtype))
        else:
            inputs.append(rng.integers(0, 8, signature.shape).astype(dtype))
    return inputs


class LoadedModel:
    """A compiled model (an Executable or a loaded .so) behind a Relax VM."""

    def __init__(self, library: Any, *, target: Target) -> None:
        self.device = runtime_device(target)
        self.vm = relax.VirtualMachine(library, self.device)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(array, device=self.device) for array in inputs]
        result = self.vm["main"](*args)
        return [_to_numpy(value) for value in _flatten(result)]

    def latency(self, inputs: list[np.ndarray], *, samples: int = 50) -> LatencyReport:
        """p50/p90/p99 over ``samples`` timed runs, each averaging enough calls for 10 ms."""
        args = [tvm.runtime.tensor(array, device=self.device) for array in inputs]
        evaluator = self.vm.time_evaluator(
            "main", self.device, number=1, repeat=samples, min_repeat_ms=10
        )
        results = np.array(evaluator(*args).results) * 1000.0
        return LatencyReport(
            p50_ms=float(np.percentile(results, 50)),
            p90_ms=float(np.percentile(results, 90)),
            p99_ms=float(np.percentile(results, 99)),
            samples=len(results),
        )


def onnxruntime_outputs(validated: ValidatedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        validated.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feed = {
        signature.name: array for signature, array in zip(validated.inputs, inputs, strict=True)
    }
    return [np.asarray(value) for value in session.run(None, feed)]


def max_abs_difference(ours: list[np.ndarray], reference: list[np.ndarray]) -> float:
    if len(ours) != len(reference):
        raise ValueError(f"{len(ours)} outputs against {len(reference)} from ONNX Runtime")
    worst = 0.0
    for mine, theirs in zip(ours, reference, strict=True):
        diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "Tuple"):
        return [item for element in value for item in _flatten(element)]
    return [value]


def _to_numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
