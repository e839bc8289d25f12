"""Whole-model latency and the output check against ONNX Runtime.

Every whole-model timing goes through one time-boxed timer (``time_calls``): our library and
ONNX Runtime are timed the same way, and a slow model is timed a few times, not fifty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from tunefarm.tuner.model_validation import TensorSignature, ValidatedModel
from tunefarm.tuner.targets import runtime_device


@dataclass(frozen=True)
class TimeBox:
    """How long a whole-model timing may take.

    Samples are taken until ``budget_sec`` is spent and there are at least ``min_samples``, or
    until there are ``max_samples``. A sample averages as many calls as fill ``min_sample_ms``
    (one call for a slow model), as TVM's ``time_evaluator`` does with ``min_repeat_ms``.
    """

    budget_sec: float = 2.0
    min_samples: int = 5
    max_samples: int = 50
    min_sample_ms: float = 10.0


@dataclass(frozen=True)
class LatencyReport:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples: int
    calls_per_sample: int = 1
    budget_reached: bool = False
    """True when the time box stopped the timing before ``max_samples``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "p50_ms": _significant(self.p50_ms),
            "p90_ms": _significant(self.p90_ms),
            "p99_ms": _significant(self.p99_ms),
            "samples": self.samples,
            "calls_per_sample": self.calls_per_sample,
            "budget_reached": self.budget_reached,
        }


def _significant(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: a model of a few microseconds keeps them."""
    return float(f"{value:.{digits}g}")


def time_calls(
    call: Callable[[], object],
    *,
    box: TimeBox,
    sync: Callable[[], object] = lambda: None,
    first_call_sec: float | None = None,
) -> LatencyReport:
    """p50/p90/p99 of ``call`` in milliseconds, within the time box.

    ``first_call_sec`` is how long a call that already ran took (it warmed the model up);
    without it one call runs untimed first. ``sync`` waits for the device at the end of each
    sample.
    """
    if first_call_sec is None:
        started = time.perf_counter()
        call()
        sync()
        first_call_sec = time.perf_counter() - started
    calls = max(1, math.ceil(box.min_sample_ms / 1000.0 / max(first_call_sec, 1e-7)))
    min_samples = min(box.min_samples, box.max_samples)
    samples: list[float] = []
    deadline = time.perf_counter() + box.budget_sec
    while len(samples) < box.max_samples:
        if len(samples) >= min_samples and time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        samples.append((time.perf_counter() - started) / calls * 1000.0)
    results = np.array(samples)
    return LatencyReport(
        p50_ms=float(np.percentile(results, 50)),
        p90_ms=float(np.percentile(results, 90)),
        p99_ms=float(np.percentile(results, 99)),
        samples=len(samples),
        calls_per_sample=calls,
        budget_reached=len(samples) < box.max_samples,
    )


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
        return [_to_numpy(value) for value in self.call(args)]

    def call(self, args: list[Any]) -> list[Any]:
        """``main`` on tensors already on the device; its outputs as the VM's tensors."""
        return _flatten(self.vm["main"](*args))

    def latency(
        self,
        inputs: list[np.ndarray],
        *,
        box: TimeBox | None = None,
        first_call_sec: float | None = None,
    ) -> LatencyReport:
        """p50/p90/p99 of ``main`` on ``inputs``, time-boxed (see ``time_calls``)."""
        args = [tvm.runtime.tensor(array, device=self.device) for array in inputs]
        main = self.vm["main"]
        return time_calls(
            lambda: main(*args),
            box=box or TimeBox(),
            sync=self.device.sync,
            first_call_sec=first_call_sec,
        )


def onnxruntime_outputs(validated: ValidatedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        validated.onnx().SerializeToString(), providers=["CPUExecutionProvider"]
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
