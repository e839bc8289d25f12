"""The rewrite to vendor kernels (issue 17), checked on the CPU.

The shim itself runs only on a GPU (``bench/gpu_peers.py --vendor-kernels`` measures it there).
Here the vendor functions are registered from numpy with the contract ``vendor_shim.cc``
implements, so a rewritten model run on the CPU must give what the original gives: that checks
which bias, residual and ReLU each call took, and that nothing was lost or computed twice.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import IRModule

from tunefarm.tuner import vendor_kernels
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import PipelineOptions, default_phases, run_pipeline
from tunefarm.tuner.sample_models import write_sample
from tunefarm.tuner.targets import parse_target

CUDA = parse_target('{"kind": "cuda", "arch": "sm_90"}')


def _conv_nhwc(x: np.ndarray, w: np.ndarray, config: list[int]) -> np.ndarray:
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups = config[:7]
    n, h, width, _ = x.shape
    k, r, s, c_group = w.shape
    padded = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    out_h = (h + 2 * pad_h - dil_h * (r - 1) - 1) // stride_h + 1
    out_w = (width + 2 * pad_w - dil_w * (s - 1) - 1) // stride_w + 1
    out = np.zeros((n, out_h, out_w, k), dtype=np.float32)
    k_group = k // groups
    for i in range(r):
        for j in range(s):
            patch = padded[
                :,
                i * dil_h : i * dil_h + stride_h * (out_h - 1) + 1 : stride_h,
                j * dil_w : j * dil_w + stride_w * (out_w - 1) + 1 : stride_w,
                :,
            ]
            for g in range(groups):
                out[..., g * k_group : (g + 1) * k_group] += (
                    patch[..., g * c_group : (g + 1) * c_group]
                    @ w[g * k_group : (g + 1) * k_group, i, j, :].T
                )
    return out


def _epilogue(acc: np.ndarray, bias: np.ndarray, residual: np.ndarray, relu: int, res: int):  # type: ignore[no-untyped-def]
    out = acc + bias.reshape(-1)
    if res:
        out = out + residual
    return np.maximum(out, 0) if relu else out


@pytest.fixture
def numpy_vendor_functions() -> Iterator[list[str]]:
    """The shim's functions, in numpy; returns the log of calls (function names)."""
    calls: list[str] = []

    def conv(x: Any, w: Any, bias: Any, z: Any, config: Any, out: Any) -> None:
        cfg = [int(v) for v in config]
        acc = _conv_nhwc(x.numpy(), w.numpy(), cfg)
        if cfg[9]:  # plain: the convolution alone
            out.copyfrom(acc)
        else:
            out.copyfrom(_epilogue(acc, bias.numpy(), z.numpy(), cfg[7], cfg[8]).astype("float32"))
        calls.append(vendor_kernels.CONV_FUNC)

    def matmul(x: Any, w: Any, bias: Any, residual: Any, config: Any, out: Any) -> None:
        transposed, relu, res, _tf32 = (int(v) for v in config)
        weight = w.numpy().T if transposed else w.numpy()
        acc = x.numpy() @ weight
        out.copyfrom(_epilogue(acc, bias.numpy(), residual.numpy(), relu, res).astype("float32"))
        calls.append(vendor_kernels.MATMUL_FUNC)

    def depthwise(x: Any, w: Any, bias: Any, _z: Any, config: Any, out: Any) -> None:
        *geometry, act_in, act_out = (int(v) for v in config)
        taps = w.numpy()  # [kh, kw, C]
        ohwi = taps.transpose(2, 0, 1)[..., None]
        acc = _conv_nhwc(_activate(x.numpy(), act_in), ohwi, [*geometry, taps.shape[2]])
        out.copyfrom(_activate(acc + bias.numpy().reshape(-1), act_out).astype(x.dtype))
        calls.append(vendor_kernels.DEPTHWISE_FUNC)

    functions = {
        vendor_kernels.CONV_FUNC: conv,
        vendor_kernels.MATMUL_FUNC: matmul,
        vendor_kernels.DEPTHWISE_FUNC: depthwise,
    }
    for name, function in functions.items():
        tvm.register_global_func(name, function, override=True)
    yield calls
    for name in functions:
        tvm_ffi.remove_global_func(name)


def _activate(values: np.ndarray, act: int) -> np.ndarray:
    """The depthwise call's activations: 0 none, 1 ReLU, 2 ReLU6."""
    if act == vendor_kernels.RELU:
        return np.maximum(values, 0)
    if act == vendor_kernels.RELU6:
        return np.clip(values, 0, 6)
    assert act == vendor_kernels.NO_ACTIVATION
    return values


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory: pytest.TempPathFactory) -> IRModule:
    path = write_sample("small-resnet", tmp_path_factory.mktemp("models") / "small_resnet.onnx")
    return import_onnx(validate_onnx_model(path))


def _before_legalize(mod: IRModule) -> IRModule:
    """The model as the vendor phase sees it on CUDA: NHWC data, OHWI weights, fp32."""
    phases = default_phases(CUDA, PipelineOptions())
    with CUDA, tvm.transform.PassContext(opt_level=3):
        for phase in phases:
            if phase.name == "legalize":
                break
            mod = tvm.transform.Sequential(phase.passes)(mod)
    return mod


def _run_on_cpu(mod: IRModule, image: np.ndarray) -> np.ndarray:
    executable = tvm.compile(mod, target=parse_target("llvm"))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(image)).numpy()


def test_every_conv_and_matmul_chain_becomes_one_vendor_call(small_resnet: IRModule) -> None:
    before = _before_legalize(small_resnet)
    after, counts = vendor_kernels.offload_to_vendor_kernels(before)
    # small-resnet: 6 convolutions (one a strided 1x1 shortcut) and the classifier's matmul.
    assert counts == {vendor_kernels.CONV_FUNC: 6, vendor_kernels.MATMUL_FUNC: 1}
    assert vendor_kernels.vendor_calls(after) == counts
    script = after["main"].script()
    for op in ("R.nn.conv2d", "R.matmul", "R.nn.relu"):
        assert op not in script
    configs = [
        [int(v) for v in call.args[1].fields[4].values]
        for call in _vendor_call_nodes(after)
        if call.args[0].global_symbol == vendor_kernels.CONV_FUNC
    ]
    # Both residual blocks end in a conv that adds the shortcut and applies ReLU.
    assert sum(cfg[8] for cfg in configs) == 2
    assert all(cfg[7] == 1 for cfg in configs if cfg[8] == 1)
    # fp32 stays exact unless TF32 is asked for.
    assert all(cfg[10] == 0 for cfg in configs)


def test_tf32_is_asked_of_every_fp32_call_only_when_the_option_is_on(
    small_resnet: IRModule,
) -> None:
    before = _before_legalize(small_resnet)
    after, counts = vendor_kernels.offload_to_vendor_kernels(before, tf32=True)
    flags = [int(call.args[1].fields[4].values[-1]) for call in _vendor_call_nodes(after)]
    assert len(flags) == sum(counts.values()) == 7
    assert flags == [1] * 7


@pytest.mark.parametrize("conv_epilogue", [True, False], ids=["fused", "plain"])
def test_the_rewritten_model_computes_what_the_original_does(
    small_resnet: IRModule, numpy_vendor_functions: list[str], conv_epilogue: bool
) -> None:
    before = _before_legalize(small_resnet)
    after, counts = vendor_kernels.offload_to_vendor_kernels(before, conv_epilogue=conv_epilogue)
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    expected = _run_on_cpu(before, image)
    got = _run_on_cpu(after, image)
    assert sorted(numpy_vendor_functions) == sorted(counts.elements())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _bottleneck() -> IRModule:
    """relu(conv1x1(x) + b + x) and a strided 1x1 shortcut, in NHWC/OHWI as on CUDA."""
    rng = np.random.default_rng(1)
    x = relax.Var("x", relax.TensorType((1, 6, 6, 8), "float32"))
    expand = relax.const(rng.standard_normal((8, 1, 1, 8)).astype("float32"))
    bias = relax.const(rng.standard_normal((1, 1, 1, 8)).astype("float32"))
    shortcut = relax.const(rng.standard_normal((4, 1, 1, 8)).astype("float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            conv = builder.emit(
                relax.op.nn.conv2d(x, expand, data_layout="NHWC", kernel_layout="OHWI")
            )
            biased = builder.emit(relax.op.add(conv, bias))
            summed = builder.emit(relax.op.add(biased, x))
            activated = builder.emit(relax.op.nn.relu(summed))
            strided = builder.emit(
                relax.op.nn.conv2d(
                    activated, shortcut, strides=[2, 2], data_layout="NHWC", kernel_layout="OHWI"
                )
            )
            out = builder.emit_output(strided)
        builder.emit_func_output(out)
    return builder.get()


def test_a_1x1_convolution_is_a_cublaslt_gemm_with_its_epilogue(
    numpy_vendor_functions: list[str],
) -> None:
    before = _bottleneck()
    after, counts = vendor_kernels.offload_to_vendor_kernels(before)
    # The stride-1 1x1 with bias, residual and ReLU is one GEMM; the strided one stays cuDNN's.
    assert counts == {vendor_kernels.MATMUL_FUNC: 1, vendor_kernels.CONV_FUNC: 1}
    gemm = next(
        call
        for call in _vendor_call_nodes(after)
        if call.args[0].global_symbol == vendor_kernels.MATMUL_FUNC
    )
    # transposed weight, ReLU, residual, no TF32
    assert [int(v) for v in gemm.args[1].fields[4].values] == [1, 1, 1, 0]
    image = np.random.default_rng(2).standard_normal((1, 6, 6, 8)).astype("float32")
    np.testing.assert_allclose(
        _run_on_cpu(after, image), _run_on_cpu(before, image), rtol=1e-4, atol=1e-4
    )


def test_plain_convolutions_leave_their_epilogues_to_the_graph(small_resnet: IRModule) -> None:
    after, counts = vendor_kernels.offload_to_vendor_kernels(
        _before_legalize(small_resnet), conv_epilogue=False
    )
    assert counts[vendor_kernels.CONV_FUNC] == 6
    script = after["main"].script()
    assert "R.nn.conv2d" not in script and "R.nn.relu" in script


def test_asymmetric_padding_and_other_layouts_stay_tvm_kernels() -> None:
    x = relax.Var("x", relax.TensorType((1, 8, 8, 4), "float32"))
    weight = relax.const(np.ones((4, 3, 3, 4), dtype="float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            asymmetric = builder.emit(
                relax.op.nn.conv2d(
                    x, weight, padding=[0, 0, 1, 1], data_layout="NHWC", kernel_layout="OHWI"
                )
            )
            out = builder.emit_output(asymmetric)
        builder.emit_func_output(out)
    mod, counts = vendor_kernels.offload_to_vendor_kernels(builder.get())
    assert not counts
    assert "R.nn.conv2d" in mod["main"].script()


def test_vendor_kernels_are_for_cuda_only(small_resnet: IRModule) -> None:
    with pytest.raises(UserInputError, match="CUDA targets only"):
        run_pipeline(
            small_resnet,
            target=parse_target("llvm"),
            options=PipelineOptions(vendor_kernels=True),
        )


def test_the_cuda_pipeline_leaves_no_conv_task(small_resnet: IRModule) -> None:
    result = run_pipeline(
        small_resnet, target=CUDA, options=PipelineOptions(fp16=True, vendor_kernels=True)
    )
    assert "vendor-kernels" in result.phases
    assert not [kernel for kernel in result.fused if "conv2d" in kernel.ops]
    assert sum(vendor_kernels.vendor_calls(result.mod).values()) == 7


def test_a_missing_vendor_toolchain_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No NVIDIA wheels and no CUDA home: what a CPU-only install has.
    monkeypatch.setattr(vendor_kernels, "_nvidia_folders", lambda: [])
    monkeypatch.setattr(vendor_kernels, "CUDA_HOME", tmp_path)
    with pytest.raises(vendor_kernels.VendorKernelsUnavailable, match=r"tunefarm\[vendor\]"):
        vendor_kernels.find_toolchain()


def _vendor_call_nodes(mod: IRModule) -> list[relax.Call]:
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_dps_packed":
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def test_a_runtime_library_the_manifest_names_and_this_machine_lacks_is_named() -> None:
    with pytest.raises(vendor_kernels.VendorKernelsUnavailable, match=r"libtunefarm_absent\.so\.1"):
        vendor_kernels.preload_runtime_libraries(["libtunefarm_absent.so.1"])


def _inverted_residual(stride: int, *, clip_used_twice: bool = False) -> IRModule:
    """MobileNetV2's block as the vendor phase sees it: a 1x1 expansion, a 3x3 depthwise
    convolution and a 1x1 projection, each ReLU6 as ``minimum(maximum(x, 0), 6)`` (how
    ``clip_rewrites`` imports it), the residual where the stride is 1."""
    rng = np.random.default_rng(2)

    def const(*shape: int, scale: float = 1.0) -> relax.Constant:
        return relax.const((scale * rng.standard_normal(shape)).astype("float32"))

    def relu6(builder: relax.BlockBuilder, value: relax.Expr) -> relax.Var:
        zero = relax.const(np.zeros((1, 1, 1, 1), "float32"))
        six = relax.const(np.full((1, 1, 1, 1), 6.0, "float32"))
        return builder.emit(relax.op.minimum(builder.emit(relax.op.maximum(value, zero)), six))

    x = relax.Var("x", relax.TensorType((1, 8, 8, 8), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            conv = relax.op.nn.conv2d
            expanded = builder.emit(
                conv(x, const(16, 1, 1, 8), data_layout="NHWC", kernel_layout="OHWI")
            )
            expanded = relu6(
                builder, builder.emit(relax.op.add(expanded, const(1, 1, 1, 16, scale=3)))
            )
            depthwise = builder.emit(
                conv(
                    expanded,
                    const(16, 3, 3, 1),
                    strides=[stride, stride],
                    padding=[1, 1, 1, 1],
                    groups=16,
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
            )
            depthwise = relu6(builder, builder.emit(relax.op.add(depthwise, const(1, 1, 1, 16))))
            out = builder.emit(
                conv(depthwise, const(8, 1, 1, 16), data_layout="NHWC", kernel_layout="OHWI")
            )
            out = builder.emit(relax.op.add(out, const(1, 1, 1, 8)))
            if stride == 1:
                out = builder.emit(relax.op.add(out, x))
            if clip_used_twice:
                pooled = builder.emit(relax.op.mean(expanded, axis=[1, 2], keepdims=True))
                out = builder.emit(relax.op.add(out, relax.op.strided_slice(pooled, [3], [0], [8])))
            result = builder.emit_output(out)
        builder.emit_func_output(result)
    return builder.get()


def _depthwise_configs(mod: IRModule) -> list[tuple[int, ...]]:
    return [
        tuple(int(v) for v in call.args[1].fields[4].values)
        for call in _vendor_call_nodes(mod)
        if call.args[0].global_symbol == vendor_kernels.DEPTHWISE_FUNC
    ]


def _ops(mod: IRModule) -> set[str]:
    names: set[str] = set()
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda expr: (
            names.add(expr.op.name)
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
            else None
        ),
    )
    return names


@pytest.mark.parametrize("stride", [1, 2])
def test_a_depthwise_convolution_takes_the_relu6_on_both_sides(
    stride: int, numpy_vendor_functions: list[str]
) -> None:
    before = _inverted_residual(stride)
    after, counts = vendor_kernels.offload_to_vendor_kernels(before)
    assert counts == {vendor_kernels.MATMUL_FUNC: 2, vendor_kernels.DEPTHWISE_FUNC: 1}
    # (stride, stride, pad, pad, dilation, dilation, act_in, act_out)
    assert _depthwise_configs(after) == [(stride, stride, 1, 1, 1, 1, 2, 2)]
    # Both ReLU6s were taken into the depthwise call: no clip is left for TVM.
    assert not {"relax.maximum", "relax.minimum", "relax.nn.conv2d"} & _ops(after)
    image = 3 * np.random.default_rng(3).standard_normal((1, 8, 8, 8)).astype("float32")
    expected = _run_on_cpu(before, image)
    got = _run_on_cpu(after, image)
    assert sorted(numpy_vendor_functions) == sorted(counts.elements())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The clip bounds were reached, so a lost ReLU6 would have shown.
    assert np.abs(expected).max() > 6


def test_a_relu6_that_something_else_reads_stays_in_the_graph(
    numpy_vendor_functions: list[str],
) -> None:
    before = _inverted_residual(2, clip_used_twice=True)
    after, _ = vendor_kernels.offload_to_vendor_kernels(before)
    assert _depthwise_configs(after) == [(2, 2, 1, 1, 1, 1, 0, 2)]
    assert {"relax.maximum", "relax.minimum"} <= _ops(after)
    image = 3 * np.random.default_rng(4).standard_normal((1, 8, 8, 8)).astype("float32")
    np.testing.assert_allclose(
        _run_on_cpu(after, image), _run_on_cpu(before, image), rtol=1e-4, atol=1e-4
    )


def test_without_our_depthwise_kernel_cudnn_takes_the_convolution_and_leaves_the_relu6() -> None:
    after, counts = vendor_kernels.offload_to_vendor_kernels(
        _inverted_residual(1), own_depthwise=False
    )
    assert counts == {vendor_kernels.MATMUL_FUNC: 2, vendor_kernels.CONV_FUNC: 1}
    assert {"relax.maximum", "relax.minimum"} <= _ops(after)


@pytest.mark.parametrize(
    ("source", "symbol"),
    [
        ("vendor_depthwise.cu", "tunefarm_depthwise_launch"),
        ("vendor_attention.cu", "tunefarm_attention_launch"),
    ],
)
def test_our_kernels_compile_for_every_gpu_generation(
    tmp_path: Path, source: str, symbol: str
) -> None:
    nvcc = vendor_kernels._find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    (path,) = [cu for cu in vendor_kernels.CUDA_SOURCES if cu.name == source]
    obj = tmp_path / "kernel.o"
    vendor_kernels.compile_cuda(vendor_kernels.VendorToolchain((), (), nvcc), path, obj)
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    assert f" T {symbol}" in symbols
