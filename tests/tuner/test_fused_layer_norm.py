"""Residual add, layer norm and fp16 copy into one call of ours (``tuner.fused_layer_norm``),
checked on the CPU against the graph it replaces, with the kernel's meaning in numpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm.ir import IRModule

from tests.tuner.attention_models import (
    Encoder,
    before_vendor_phase,
    example_inputs,
    relax_ops,
    run_on_cpu,
)
from tunefarm.tuner import fused_layer_norm

HEADS, HEAD_SIZE, TOKENS = 2, 8, 12


def _encoder_before_vendor_phase(tmp_path: Path, *, fp16: bool = True) -> IRModule:
    torch.manual_seed(0)
    module = Encoder(HEADS, HEAD_SIZE).eval()
    inputs = example_inputs(TOKENS, HEADS * HEAD_SIZE)
    return before_vendor_phase(module, inputs, tmp_path, fp16=fp16)


def _normalized(x: Any, residual: Any, gamma: Any, beta: Any, config: Any) -> np.ndarray:
    epsilon = np.frombuffer(np.uint32(int(config[0])).tobytes(), np.float32)[0]
    cols = int(np.prod(gamma.shape))
    total = (x.numpy().astype(np.float32) + residual.numpy()).reshape(-1, cols)
    mean = total.mean(axis=1, keepdims=True)
    variance = ((total - mean) ** 2).mean(axis=1, keepdims=True)
    return (total - mean) / np.sqrt(variance + epsilon) * gamma.numpy() + beta.numpy()


@pytest.fixture
def numpy_layer_norm() -> Iterator[list[str]]:
    """Both functions in numpy; returns the log of calls."""
    calls: list[str] = []

    def single(x: Any, residual: Any, gamma: Any, beta: Any, config: Any, y: Any) -> None:
        y.copyfrom(_normalized(x, residual, gamma, beta, config).reshape(tuple(y.shape)))
        calls.append(fused_layer_norm.LAYER_NORM_FUNC)

    def with_half(
        x: Any, residual: Any, gamma: Any, beta: Any, config: Any, y: Any, y_half: Any
    ) -> None:
        out = _normalized(x, residual, gamma, beta, config)
        y.copyfrom(out.reshape(tuple(y.shape)))
        y_half.copyfrom(out.reshape(tuple(y_half.shape)).astype("float16"))
        calls.append(fused_layer_norm.LAYER_NORM_HALF_FUNC)

    functions = {
        fused_layer_norm.LAYER_NORM_FUNC: single,
        fused_layer_norm.LAYER_NORM_HALF_FUNC: with_half,
    }
    for name, function in functions.items():
        tvm.register_global_func(name, function, override=True)
    yield calls
    for name in functions:
        tvm_ffi.remove_global_func(name)


def test_each_residual_layer_norm_becomes_one_call_that_computes_what_the_graph_does(
    tmp_path: Path, numpy_layer_norm: list[str]
) -> None:
    original = _encoder_before_vendor_phase(tmp_path)
    assert relax_ops(original).count("relax.nn.layer_norm") == 4
    fused, count = fused_layer_norm.fuse_add_layer_norm(original)
    assert count == 4
    assert "relax.nn.layer_norm" not in relax_ops(fused)
    hidden, mask = (t.numpy() for t in example_inputs(TOKENS, HEADS * HEAD_SIZE, seed=1))
    expected = run_on_cpu(original, hidden, mask)
    got = run_on_cpu(fused, hidden, mask)
    # Three layer norms feed a projection (an fp16 copy); the last is the model's output.
    assert numpy_layer_norm == [fused_layer_norm.LAYER_NORM_HALF_FUNC] * 3 + [
        fused_layer_norm.LAYER_NORM_FUNC
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)


def test_fp32_models_keep_their_layer_norms_whole(tmp_path: Path) -> None:
    """Without --fp16 no cast feeds the add: nothing to take (TVM fuses the add itself)."""
    original = _encoder_before_vendor_phase(tmp_path, fp16=False)
    assert fused_layer_norm.fuse_add_layer_norm(original)[1] == 0
