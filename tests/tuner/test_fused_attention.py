"""Attention into one call of ours (``tuner.fused_attention``), checked on the CPU.

The kernel's meaning (``vendor_attention.cu``) is written here in numpy, config and all, and
registered under the kernel's name: the rewritten model, built for the CPU, must compute what
the original does. The CUDA kernel itself is checked against TVM's on a GPU
(``test_vendor_kernels_gpu.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import IRModule

from tests.tuner.attention_models import (
    SelfAttention,
    before_vendor_phase,
    example_inputs,
    relax_ops,
    run_on_cpu,
)
from tunefarm.tuner import fused_attention

HEADS, HEAD_SIZE, TOKENS = 2, 8, 12
HIDDEN = HEADS * HEAD_SIZE


def _attention_model(
    tmp_path: Path,
    *,
    masked: bool = True,
    divide: bool = False,
    fp16: bool = True,
    sdpa: bool = False,
    tokens: int = TOKENS,
) -> IRModule:
    """The model as the vendor phase sees it on CUDA (with --fp16 unless ``fp16=False``)."""
    torch.manual_seed(0)
    module = SelfAttention(HEADS, HEAD_SIZE, masked=masked, scale_by_divide=divide, sdpa=sdpa)
    return before_vendor_phase(module.eval(), example_inputs(tokens, HIDDEN), tmp_path, fp16=fp16)


def _reference_attention(q: Any, k: Any, v: Any, mask: Any, config: Any, out: Any) -> None:
    """``tunefarm_attention`` in numpy: each operand read through the config's strides."""
    b, h, s, sk, d, *strides = (int(c) for c in config)
    mask_bits, scale_bits, *offsets = strides[16:]

    def view(tensor: Any, rows: int, at: int) -> np.ndarray:
        flat = tensor.numpy().reshape(-1).astype(np.float32)[offsets[at // 3] :]
        return np.lib.stride_tricks.as_strided(
            flat, (b, h, rows, d), [4 * x for x in (*strides[at : at + 3], 1)]
        )

    scores = view(q, s, 0) @ view(k, sk, 3).transpose(0, 1, 3, 2)
    scores = scores * np.frombuffer(np.uint32(scale_bits).tobytes(), np.float32)[0]
    if mask_bits:
        flat = mask.numpy().reshape(-1).astype(np.float32)
        scores = scores + np.lib.stride_tricks.as_strided(
            flat, (b, h, s, sk), [4 * x for x in strides[12:16]]
        )
    best = scores.max(axis=-1, keepdims=True)
    empty = np.isneginf(best)  # every key masked with -inf: weights 0
    probs = np.where(empty, 0.0, np.exp(scores - np.where(empty, 0.0, best)))
    probs /= np.where(empty, 1.0, probs.sum(axis=-1, keepdims=True))
    result = probs @ view(v, sk, 6)
    placed = np.zeros(math.prod(out.shape), np.float32)
    np.lib.stride_tricks.as_strided(placed, (b, h, s, d), [4 * x for x in (*strides[9:12], 1)])[
        ...
    ] = result
    out.copyfrom(placed.reshape(tuple(out.shape)).astype(out.dtype))


@pytest.fixture
def numpy_attention() -> Iterator[None]:
    tvm.register_global_func(fused_attention.ATTENTION_FUNC, _reference_attention, override=True)
    yield
    tvm_ffi.remove_global_func(fused_attention.ATTENTION_FUNC)


@pytest.mark.parametrize(
    ("masked", "divide", "sdpa"),
    [(True, False, False), (False, True, False), (True, False, True), (False, False, True)],
    ids=["mask", "no-mask-divide", "sdpa-mask", "sdpa-no-mask"],
)
def test_attention_becomes_one_call_that_computes_what_the_graph_does(
    tmp_path: Path, numpy_attention: None, masked: bool, divide: bool, sdpa: bool
) -> None:
    original = _attention_model(tmp_path, masked=masked, divide=divide, sdpa=sdpa)
    fused, count = fused_attention.fuse_attention(original)
    assert count == 1
    ops = relax_ops(fused)
    assert "relax.nn.softmax" not in ops
    # The head split and merge are strides of the call now: no transpose is left.
    assert "relax.permute_dims" not in ops
    (config,) = [[int(c) for c in call.args[1].fields[4].values] for call in _calls(fused)]
    b, h, s, sk, d = config[:5]
    assert (b, h, s, sk, d) == (1, HEADS, TOKENS, TOKENS, HEAD_SIZE)
    # One projection for Q, K and V, [tokens, 3 * heads * size], read where it wrote them.
    assert ops.count("relax.matmul") == 2  # that one and the output projection
    assert config[5:8] == [0, HEAD_SIZE, 3 * HIDDEN]
    assert config[23:] == [0, HIDDEN, 2 * HIDDEN]
    assert config[21] == (32 if masked else 0)
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((1, TOKENS, HIDDEN)).astype("float32")
    mask = np.ones((1, TOKENS), "float32")
    mask[0, -3:] = 0  # padding: their keys must get no weight
    expected = run_on_cpu(original, hidden, mask)
    got = run_on_cpu(fused, hidden, mask)
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
    if masked:  # the case proves the mask: without it the answer differs
        unmasked = run_on_cpu(original, hidden, np.ones_like(mask))
        assert np.abs(unmasked - expected).max() > 1e-2


def test_sdpa_rows_with_every_key_masked_get_no_weight(
    tmp_path: Path, numpy_attention: None
) -> None:
    """scaled_dot_product_attention's decomposition zeroes a row whose keys are all masked
    (-inf everywhere; softmax alone gives NaN): the call takes that guard too."""
    original = _attention_model(tmp_path, sdpa=True)
    fused, count = fused_attention.fuse_attention(original)
    assert count == 1
    ops = relax_ops(fused)
    assert "relax.nn.softmax" not in ops
    assert "relax.logical_not" not in ops  # the guard went with it
    assert "relax.logical_not" in relax_ops(original)
    hidden = np.random.default_rng(2).standard_normal((1, TOKENS, HIDDEN)).astype("float32")
    nothing = np.zeros((1, TOKENS), "float32")
    expected = run_on_cpu(original, hidden, nothing)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(run_on_cpu(fused, hidden, nothing), expected, rtol=2e-2, atol=2e-2)


def _calls(mod: IRModule) -> list[relax.Call]:
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if (
            isinstance(expr, relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == "relax.call_dps_packed"
            and expr.args[0].global_symbol == fused_attention.ATTENTION_FUNC
        ):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def test_more_keys_than_the_kernel_takes_stay_tvms(tmp_path: Path) -> None:
    """Over MAX_KEYS keys the kernel's registers run out: that attention is left to TVM."""
    assert fused_attention.fuse_attention(_attention_model(tmp_path, tokens=264))[1] == 0


def test_fp32_attention_stays_tvms(tmp_path: Path) -> None:
    assert fused_attention.fuse_attention(_attention_model(tmp_path, fp16=False))[1] == 0


def test_probabilities_read_elsewhere_keep_the_graph(tmp_path: Path) -> None:
    """Attention whose softmax is also an output (attention maps) is not replaced."""
    mod = _attention_model(tmp_path)
    main = mod["main"]
    softmax = next(
        binding.var
        for block in main.body.blocks
        for binding in block.bindings
        if isinstance(binding.value, relax.Call)
        and getattr(binding.value.op, "name", "") == "relax.nn.softmax"
    )
    body = main.body
    both = relax.BlockBuilder().normalize(
        relax.SeqExpr(body.blocks, relax.Tuple([body.body, softmax]))
    )
    exposed = IRModule({"main": relax.Function(main.params, both, attrs=main.attrs)})
    assert fused_attention.fuse_attention(exposed)[1] == 0


@pytest.mark.parametrize(
    ("index", "layout"),
    [
        (np.arange(24).reshape(2, 3, 4), (0, (12, 4, 1))),
        (np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2), (0, (4, 12, 1))),
        (np.arange(24).reshape(2, 3, 4)[:, :1, :], (0, (12, 0, 1))),
        (np.arange(48).reshape(2, 24)[:, 8:20].reshape(2, 3, 4), (8, (24, 4, 1))),
        (np.arange(24).reshape(2, 3, 4)[::-1], None),
        (np.arange(24).reshape(2, 12)[:, ::-1].reshape(2, 3, 4), None),
    ],
)
def test_affine_layouts_are_found_only_where_they_hold(
    index: np.ndarray, layout: tuple[int, tuple[int, ...]] | None
) -> None:
    assert fused_attention._affine(index) == layout
