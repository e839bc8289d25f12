"""Our kernels (``vendor_depthwise.cu``, ``vendor_attention.cu``, ``vendor_layer_norm.cu``) on a
real GPU, in an exported library.

Skipped without a CUDA GPU and the vendor toolchain (this machine); run on the device with
``python3 -m pytest tests/tuner/test_vendor_kernels_gpu.py`` (``bench/README.md``). A depthwise
case is ``relu6(depthwise(relu6(x + b0)) + b1)``: the rewrite takes both ReLU6s into one call;
a BERT case is one encoder layer. The library must give what TVM's own kernels give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.ir import IRModule

from tunefarm.tuner import build, vendor_kernels
from tunefarm.tuner.targets import parse_target


def _gpu_and_toolchain() -> vendor_kernels.VendorToolchain | None:
    if not tvm.cuda(0).exist:
        return None
    try:
        return vendor_kernels.find_toolchain()
    except vendor_kernels.VendorKernelsUnavailable:
        return None


TOOLCHAIN = _gpu_and_toolchain()
pytestmark = pytest.mark.skipif(TOOLCHAIN is None, reason="needs a CUDA GPU and nvcc, cuDNN")


def _depthwise_block(
    channels: int, stride: int, kernel: int, dtype: str, size: int = 9
) -> IRModule:
    rng = np.random.default_rng(channels * 10 + stride)

    def const(*shape: int, scale: float = 1.0) -> relax.Constant:
        return relax.const((scale * rng.standard_normal(shape)).astype(dtype))

    def relu6(builder: relax.BlockBuilder, value: relax.Expr) -> relax.Var:
        zero = relax.const(np.zeros((1, 1, 1, 1), dtype))
        six = relax.const(np.full((1, 1, 1, 1), 6.0, dtype))
        return builder.emit(relax.op.minimum(builder.emit(relax.op.maximum(value, zero)), six))

    x = relax.Var("x", relax.TensorType((1, size, size, channels), dtype))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            shifted = relu6(builder, builder.emit(relax.op.add(x, const(1, 1, 1, channels))))
            pad = kernel // 2
            conv = builder.emit(
                relax.op.nn.conv2d(
                    shifted,
                    const(channels, kernel, kernel, 1, scale=0.5),
                    strides=[stride, stride],
                    padding=[pad, pad, pad, pad],
                    groups=channels,
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
            )
            out = relu6(builder, builder.emit(relax.op.add(conv, const(1, 1, 1, channels))))
            result = builder.emit_output(out)
        builder.emit_func_output(result)
    return builder.get()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    ("channels", "stride", "kernel"),
    [(32, 1, 3), (96, 2, 3), (5, 2, 3), (24, 1, 5)],
    ids=["vector-s1", "vector-s2", "scalar-s2", "5x5"],
)
def test_the_depthwise_call_gives_what_tvm_gives(
    dtype: str, channels: int, stride: int, kernel: int, tmp_path: Path
) -> None:
    assert TOOLCHAIN is not None
    target = parse_target("cuda")
    device = tvm.cuda(0)
    original = _depthwise_block(channels, stride, kernel, dtype)
    offloaded, counts = vendor_kernels.offload_to_vendor_kernels(original)
    assert counts == {vendor_kernels.DEPTHWISE_FUNC: 1}
    library = tmp_path / "depthwise.so"
    build.export_library(build.compile_untuned(offloaded, target=target), library, vendor=TOOLCHAIN)
    vendor_kernels.preload_runtime_libraries(TOOLCHAIN.libraries)
    ours = relax.VirtualMachine(tvm.runtime.load_module(str(library)), device)
    theirs = relax.VirtualMachine(build.compile_untuned(original, target=target), device)
    image = (3 * np.random.default_rng(5).standard_normal((1, 9, 9, channels))).astype(dtype)
    x = tvm.runtime.tensor(image, device=device)
    got = ours["main"](x).numpy().astype("float32")
    expected = theirs["main"](x).numpy().astype("float32")
    tolerance = 2e-2 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    assert 0 < expected.max() <= 6 and expected.min() >= 0
    assert (expected == 6).any(), "the upper clip bound was never reached: a weak case"


@pytest.mark.parametrize(
    ("heads", "head_size", "tokens", "padded", "sdpa"),
    [
        (12, 64, 128, 28, False),
        (2, 8, 40, 0, False),
        (4, 32, 200, 7, False),
        (12, 64, 128, 28, True),
        # Head size 16: the tensor-core variants also get rows past the last full tile, fewer
        # than 32 keys and rows whose keys are all masked.
        (2, 16, 24, 24, True),
    ],
    ids=["bert-base", "small-uneven-rows", "keys-past-128", "bert-base-sdpa", "sdpa-all-masked"],
)
def test_the_attention_and_layer_norm_calls_give_what_tvm_gives(
    heads: int,
    head_size: int,
    tokens: int,
    padded: int,
    sdpa: bool,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """A BERT layer through tunefarm.compile, with and without our kernels."""
    import torch

    import tunefarm
    from tests.tuner.attention_models import Encoder, example_inputs

    torch.manual_seed(heads)
    module = Encoder(heads, head_size, layers=1, sdpa=sdpa).eval()
    hidden = heads * head_size
    inputs = example_inputs(tokens, hidden, padded=padded)
    built = {
        vendor: tunefarm.compile(
            module,
            inputs,
            target="cuda",
            trials=0,
            fp16=True,
            database=f"sqlite:///{tmp_path / 'tuning.db'}",
            out_dir=tmp_path / f"vendor-{vendor}",
            progress=False,
            baseline=False,
            vendor_kernels=vendor,
        )
        for vendor in (True, False)
    }
    calls = built[True].manifest["pipeline"]["vendor_calls"]
    assert calls.get("tunefarm_attention") == 1
    assert calls.get("tunefarm_add_layer_norm_half") == calls.get("tunefarm_add_layer_norm") == 1
    fresh = example_inputs(tokens, hidden, padded=padded, seed=1)
    fresh = tuple(tensor.cuda() for tensor in fresh)
    theirs = built[False](*fresh).float().cpu().numpy()
    assert np.isfinite(theirs).all()
    scale = np.abs(theirs).max()
    # Each launch variant of the attention and layer norm kernels (the shim keeps the fastest of
    # each; the tensor-core attention takes head sizes that are multiples of 16), then the timed
    # choice among every variant, then among the default candidates. A loaded library captures
    # its CUDA graph once: each gets a library loaded anew.
    tensor_core = ("2", "3") if head_size % 16 == 0 else ()
    forced = [(a, "") for a in ("0", "1", *tensor_core)] + [("", "0"), ("", "1")]
    forced += [(",".join(("0", "1", *tensor_core)), "0,1"), ("", "")]
    for attention, layer_norm in forced:
        monkeypatch.setenv("TUNEFARM_ATTENTION_VARIANT", attention)
        monkeypatch.setenv("TUNEFARM_LAYER_NORM_VARIANT", layer_norm)
        library = tunefarm.load(tmp_path / "vendor-True")
        ours = library(*fresh).float().cpu().numpy()
        error = np.abs(ours - theirs).max()
        assert error <= 1e-2 * scale, f"attention {attention!r}, layer norm {layer_norm!r}"
