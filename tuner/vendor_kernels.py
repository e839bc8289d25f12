"""cuDNN convolutions and cuBLASLt matmuls in place of tuned kernels, on CUDA targets (issue 17).

MetaSchedule's CUDA search space has no split-K and no Hopper instructions, so the convolutions
and matmuls with few output rows (ResNet's last stages, a batch-1 classifier) stay far from
what the vendor libraries reach. This module:

- rewrites each eligible convolution or matmul chain of the Relax graph, with its bias, residual
  add and ReLU, into one ``call_dps_packed`` to a function of ``vendor_shim.cc``;
- rewrites each depthwise convolution, with its bias and the ReLU6 on either side of it, into
  one call to a kernel of ours (``vendor_depthwise.cu``): cuDNN's depthwise kernel was 4x
  torch's on MobileNetV2, and its fused call takes no ReLU6;
- compiles that shim against the cuDNN and cuBLASLt headers of NVIDIA's pip wheels, and our
  kernels (``CUDA_SOURCES``: depthwise, attention from ``fused_attention``, add + layer norm
  from ``fused_layer_norm``) with nvcc, so the exported library carries the calls (a Python
  callback would keep only its name);
- loads the vendor libraries before such a library is loaded.

Shapes the rewrite does not take (asymmetric padding, mixed dtypes) stay TVM kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Constant, IRModule

from tunefarm.tuner.binding_chains import (
    BindingGraph,
    ChainValue,
    dtype_of,
    op_name,
    replace_chains,
    static_shape,
)
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.fused_attention import ATTENTION_FUNC
from tunefarm.tuner.fused_layer_norm import LAYER_NORM_FUNC, LAYER_NORM_HALF_FUNC

logger = logging.getLogger(__name__)

CONV_FUNC = "tunefarm_cudnn_conv2d"
MATMUL_FUNC = "tunefarm_cublaslt_matmul"
DEPTHWISE_FUNC = "tunefarm_depthwise_conv2d"
VENDOR_FUNCS = (
    CONV_FUNC,
    MATMUL_FUNC,
    DEPTHWISE_FUNC,
    ATTENTION_FUNC,
    LAYER_NORM_FUNC,
    LAYER_NORM_HALF_FUNC,
)
SHIM_SOURCE = Path(__file__).with_name("vendor_shim.cc")
CUDA_SOURCES = (
    Path(__file__).with_name("vendor_depthwise.cu"),
    Path(__file__).with_name("vendor_attention.cu"),  # tuner.fused_attention's kernel
    Path(__file__).with_name("vendor_layer_norm.cu"),  # tuner.fused_layer_norm's kernel
)
# Real code for each GPU generation from Ampere on, and PTX that later drivers compile.
NVCC_ARCHS = ("80", "86", "89", "90", "100", "120")
# The CUDA toolkit's headers (crt/ is not in the runtime wheel) and libraries, after the wheels.
CUDA_HOME = Path("/usr/local/cuda")
# sonames the shim links against; the loader brings them in before the library.
RUNTIME_LIBRARIES = ("libcudart.so.13", "libcublasLt.so.13", "libcudnn.so.9")
NVRTC = "libnvrtc.so.13"
"""Linked too where the shim is built with cuDNN's graph API (its frontend compiles kernels)."""
# cuDNN 9 opens its parts by soname when first used; load them first, dependencies first.
_CUDNN_PARTS = (
    "libcudnn_graph.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_adv.so.9",
)


_VERSION_HEADERS = ("cudnn_version.h", "cublas_api.h", "cudnn_frontend_version.h", "cuda.h")


class VendorKernelsUnavailable(UserInputError):
    """The headers, libraries or compiler the vendor kernels need are not on this machine."""


# ---------------------------------------------------------------------------------------------
# The graph rewrite


@dataclass(frozen=True)
class VendorCall:
    """One chain of the graph that becomes one vendor call."""

    func: str
    x: relax.Expr
    weight: Constant
    bias: Constant
    residual: relax.Expr | None
    config: tuple[int, ...]
    bindings: tuple[tuple[relax.Var, relax.Call], ...]
    """The chain as it was: its bindings in order (``vendor_choice`` lowers them alone)."""
    out_ty: Any
    """The type of the chain's result."""
    fused_tail: tuple[tuple[relax.Var, relax.Call], ...] = ()
    """Casts after the chain that TVM fuses into the chain's task; not part of the call."""


VendorSelect = Callable[[dict[relax.Var, VendorCall]], set[relax.Var]]
"""Which of the eligible chains (keyed by their last variable) go to the vendor."""


def require_cuda(target: tvm.target.Target) -> None:
    if target.kind.name != "cuda":
        raise UserInputError("--vendor-kernels is for CUDA targets only")


def vendor_call_expr(
    call: VendorCall, x: relax.Expr, residual: relax.Expr | None, *, out_ty: Any
) -> relax.Call:
    """The ``call_dps_packed`` that computes ``call`` on ``x`` (and ``residual``)."""
    # Without a residual the shim never reads that argument: x stands in for it.
    z = residual if residual is not None else x
    args = relax.Tuple([x, call.weight, call.bias, z, relax.ShapeExpr(call.config)])
    return relax.call_dps_packed(call.func, args, out_ty=out_ty)


def offload_to_vendor_kernels(
    mod: IRModule,
    *,
    conv_epilogue: bool = True,
    select: VendorSelect | None = None,
    tf32: bool = False,
    own_depthwise: bool = True,
) -> tuple[IRModule, Counter[str]]:
    """``mod`` with every eligible chain in ``main`` replaced; how many of each function.

    ``conv_epilogue=False`` hands cuDNN the convolutions alone: their bias, residual and ReLU
    stay in the graph, where TVM fuses them into one elementwise kernel. ``select`` keeps some of
    the eligible chains (``vendor_choice``: the faster of tuned and vendor); by default all.
    ``tf32`` lets fp32 calls round their inputs to TF32 on the tensor cores, as torch's cuDNN
    convolutions do by default; fp32 stays exact otherwise. ``own_depthwise=False`` leaves
    depthwise convolutions to cuDNN, as before our kernel (``bench/vendor_profile.py`` compares).
    """
    function = mod["main"]
    calls = _find_chains(
        function, conv_epilogue=conv_epilogue, tf32=tf32, own_depthwise=own_depthwise
    )
    if select is not None:
        kept = select(calls)
        calls = {end: call for end, call in calls.items() if end in kept}
    if not calls:
        return mod, Counter()
    # The chains' old bindings are left unused, and removed: nothing may legalize or tune them.
    mod = replace_chains(mod, {end: _call_value(call) for end, call in calls.items()})
    return mod, Counter(call.func for call in calls.values())


def offload_pass(select: VendorSelect | None = None, *, tf32: bool = False) -> tvm.transform.Pass:
    """``offload_to_vendor_kernels`` as a module pass, for a pipeline phase."""

    def transform(mod: IRModule, _context: tvm.transform.PassContext) -> IRModule:
        mod, counts = offload_to_vendor_kernels(mod, select=select, tf32=tf32)
        logger.info("vendor kernels: %s", dict(counts) or "no eligible operator")
        return mod

    return tvm.transform.module_pass(transform, opt_level=0, name="OffloadToVendorKernels")


def vendor_calls(mod: IRModule) -> Counter[str]:
    """How many calls to each vendor function ``mod``'s Relax functions make."""
    counts: Counter[str] = Counter()

    def visit(expr: relax.Expr) -> None:
        if op_name(expr) == "relax.call_dps_packed":
            assert isinstance(expr, relax.Call)
            name = getattr(expr.args[0], "global_symbol", None)
            if name in VENDOR_FUNCS:
                counts[str(name)] += 1

    for function in mod.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function.body, visit)
    return counts


def _bias_vector(expr: relax.Expr, channels: int, dtype: str) -> Constant | None:
    """A constant that broadcasts along the last axis only, as a 1-D constant of ``channels``."""
    if not isinstance(expr, Constant) or dtype_of(expr) != dtype:
        return None
    shape = static_shape(expr)
    if shape is None or not shape or shape[-1] != channels or any(d != 1 for d in shape[:-1]):
        return None
    return relax.const(expr.value.numpy().reshape(channels), dtype)


def _anchor(
    value: relax.Expr, *, own_depthwise: bool = True
) -> tuple[str, tuple[int, ...], relax.Expr, Constant] | None:
    """(function, config head, x, weight) for a convolution or matmul the shim can run."""
    op = op_name(value)
    if op not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    assert isinstance(value, relax.Call)
    x, weight = value.args[0], value.args[1]
    dtype = dtype_of(value)
    if dtype not in ("float16", "float32") or dtype_of(x) != dtype or dtype_of(weight) != dtype:
        return None
    x_shape = static_shape(x)
    if x_shape is None or len(x_shape) < 2 or static_shape(value) is None:
        return None
    attrs = value.attrs
    if op == "relax.nn.conv2d":
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "OHWI", "NHWC"):
            return None
        top, left, bottom, right = (int(p) for p in attrs.padding)
        if (top, left) != (bottom, right) or not isinstance(weight, Constant):
            return None
        strides = [int(s) for s in attrs.strides]
        dilation = [int(d) for d in attrs.dilation]
        kernel = static_shape(weight)
        assert kernel is not None
        groups = int(attrs.groups)
        if own_depthwise and groups > 1 and groups == x_shape[-1] == kernel[0] and kernel[3] == 1:
            # Our kernel reads V channels of one tap as one vector: the weight as [kh, kw, C].
            taps = weight.value.numpy().reshape(kernel[0], kernel[1], kernel[2]).transpose(1, 2, 0)
            return DEPTHWISE_FUNC, (*strides, top, left, *dilation), x, relax.const(taps, dtype)
        if kernel[1:3] == (1, 1) and strides == [1, 1] and top == left == 0 and groups == 1:
            # A 1x1 convolution over NHWC data is a GEMM: [N*H*W, C] x [C, K], the OHWI weight
            # being [K, C] transposed. cuBLASLt runs it on Hopper kernels, where cuDNN's legacy
            # API falls back to implicit_convolve_sgemm (bench/results/vendor_profile-h200-*).
            as_matrix = relax.const(weight.value.numpy().reshape(kernel[0], kernel[3]), dtype)
            return MATMUL_FUNC, (1,), x, as_matrix
        return CONV_FUNC, (*strides, top, left, *dilation, groups), x, weight
    shape = static_shape(weight)
    if shape is not None and len(shape) == 2 and isinstance(weight, Constant):
        return MATMUL_FUNC, (0,), x, weight
    return None


# The activations a depthwise call applies (its config's act_in and act_out).
NO_ACTIVATION, RELU, RELU6 = 0, 1, 2


def _scalar(expr: relax.Expr) -> float | None:
    """The value of a constant whose elements are all one value (a clip's bound)."""
    if not isinstance(expr, Constant):
        return None
    values = expr.value.numpy()
    if values.size == 0 or not np.all(values == values.reshape(-1)[0]):
        return None
    return float(values.reshape(-1)[0])


def _activation_step(value: relax.Expr, previous: int, operand: relax.Var) -> int | None:
    """The activation after ``value`` is applied to ``operand``, which had ``previous``
    applied: ReLU as ``relu`` or ``maximum(x, 0)``, ReLU6 as a ReLU then ``minimum(x, 6)``
    (``clip_rewrites`` imports every constant clip so). None: ``value`` is not that step."""
    op = op_name(value)
    if op == "relax.nn.relu" and previous == NO_ACTIVATION:
        return RELU
    if op not in ("relax.maximum", "relax.minimum"):
        return None
    assert isinstance(value, relax.Call)
    left, right = value.args
    if not left.same_as(operand):
        return None
    bound = _scalar(right)
    if op == "relax.maximum" and previous == NO_ACTIVATION and bound == 0.0:
        return RELU
    if op == "relax.minimum" and previous == RELU and bound == 6.0:
        return RELU6
    return None


def _find_chains(
    function: relax.Function,
    *,
    conv_epilogue: bool,
    tf32: bool = False,
    own_depthwise: bool = True,
) -> dict[relax.Var, VendorCall]:
    """Each chain's last variable, with the vendor call that computes it."""
    graph = BindingGraph.of(function)
    bindings, uses = graph.values, graph.uses
    chains: dict[relax.Var, VendorCall] = {}
    # A binding belongs to one chain at most: where two branches meet in a residual add, the
    # first chain takes the add and the other ends before it.
    claimed: set[relax.Var] = set()

    def sole_user(var: relax.Var) -> relax.Var | None:
        """The one binding that uses ``var``, if no chain has taken it."""
        return graph.sole_reader(var, claimed)

    def prologue(x: relax.Expr) -> tuple[relax.Expr, int, list[tuple[relax.Var, relax.Call]]]:
        """The activation a depthwise call can apply as it loads ``x`` (MobileNet's ReLU6 after
        the 1x1 expansion): the activation's input, the activation, its bindings."""
        steps: list[tuple[relax.Var, relax.Call]] = []
        source = x
        while (
            isinstance(source, relax.Var)
            and source in bindings
            and source not in claimed
            and uses[source] == 1
            and op_name(bindings[source]) in ("relax.nn.relu", "relax.maximum", "relax.minimum")
        ):
            value = bindings[source]
            assert isinstance(value, relax.Call)
            steps.insert(0, (source, value))
            source = value.args[0]
        # Replayed from its input, the steps must make exactly ReLU or ReLU6.
        act = NO_ACTIVATION
        operand = source
        for step_var, step_value in steps:
            step = _activation_step(step_value, act, operand)  # type: ignore[arg-type]
            if step is None:
                return x, NO_ACTIVATION, []
            act, operand = step, step_var
        return source, act, steps

    for var, value in bindings.items():
        anchor = _anchor(value, own_depthwise=own_depthwise)
        if anchor is None:
            continue
        func, head, x, weight = anchor
        out_shape = static_shape(value)
        dtype = dtype_of(value)
        assert out_shape is not None and dtype is not None
        channels = out_shape[-1]
        depthwise = func == DEPTHWISE_FUNC
        bias: Constant | None = None
        residual: relax.Expr | None = None
        act_in = NO_ACTIVATION
        chain: list[tuple[relax.Var, relax.Call]] = [(var, value)]  # type: ignore[list-item]
        if depthwise:
            x, act_in, steps = prologue(x)
            chain = [*steps, *chain]
            claimed.update(step_var for step_var, _ in steps)
        act = NO_ACTIVATION
        end = var
        plain = func == CONV_FUNC and not conv_epilogue
        # Until the chain's last activation: ReLU for every call, ReLU6 for a depthwise one.
        while not plain and act != RELU6 and (act != RELU or depthwise):
            user = sole_user(end)
            if user is None:
                break
            user_value = bindings[user]
            op = op_name(user_value)
            step = _activation_step(user_value, act, end) if depthwise else None
            if step is not None:
                act = step
            elif op == "relax.nn.relu" and act == NO_ACTIVATION:
                act = RELU
            elif op == "relax.add" and residual is None and act == NO_ACTIVATION:
                assert isinstance(user_value, relax.Call)
                left, right = user_value.args
                other = right if left.same_as(end) else left
                vector = None if bias is not None else _bias_vector(other, channels, dtype)
                if vector is not None:
                    bias = vector
                elif (
                    not depthwise
                    and isinstance(other, relax.Var)
                    and (left.same_as(end) or uses[other] > 1)
                    and static_shape(other) == out_shape
                    and dtype_of(other) == dtype
                ):
                    # A residual add joins the chain of its first operand, as TVM's FuseOps
                    # fuses it (ResNet's main branch, not the shortcut): the chain is then the
                    # task the database knows (tuner.vendor_choice). Where the first operand
                    # is read elsewhere too (MobileNetV2's `x + block(x)`), no chain can end
                    # in the add but ours, as no fused kernel but this one can hold it.
                    residual = other
                else:
                    break
            else:
                break
            chain.append((user, user_value))  # type: ignore[arg-type]
            end = user
            claimed.add(end)
        # What TVM would fuse after the chain (a cast to fp32 at the end of an fp16 model) is
        # not the vendor's, but the chain's task has it.
        tail: list[tuple[relax.Var, relax.Call]] = []
        last = end
        while (user := sole_user(last)) is not None:
            if op_name(bindings[user]) != "relax.astype":
                break
            tail.append((user, bindings[user]))  # type: ignore[arg-type]
            last = user
        if bias is None:
            bias = relax.const(np.zeros(channels, dtype=dtype), dtype)
        if depthwise:
            config = (*head, act_in, act)
        else:
            config = (*head, int(act == RELU), int(residual is not None))
            if func == CONV_FUNC:
                config += (int(plain),)
            config += (int(tf32 and dtype == "float32"),)
        chains[end] = VendorCall(
            func, x, weight, bias, residual, config, tuple(chain), end.ty, tuple(tail)
        )
    return chains


def _call_value(call: VendorCall) -> ChainValue:
    """The vendor call that becomes the value of ``call``'s last binding."""

    def value(
        _builder: relax.BlockBuilder, visit: Callable[[relax.Expr], relax.Expr]
    ) -> relax.Expr:
        residual = visit(call.residual) if call.residual is not None else None
        return vendor_call_expr(call, visit(call.x), residual, out_ty=call.out_ty)

    return value


# ---------------------------------------------------------------------------------------------
# Building the shim


@dataclass(frozen=True)
class VendorToolchain:
    include_dirs: tuple[Path, ...]
    library_dirs: tuple[Path, ...]
    nvcc: Path
    """The CUDA compiler, for our own kernels (``vendor_depthwise.cu``)."""
    graph_api: bool = False
    """cuDNN's graph API through nvidia-cudnn-frontend's headers (and NVRTC, which they use)."""

    @property
    def libraries(self) -> tuple[str, ...]:
        return (*RUNTIME_LIBRARIES, *((NVRTC,) if self.graph_api else ()))

    def compile_options(self) -> list[str]:
        defines = ["-DTUNEFARM_CUDNN_FRONTEND"] if self.graph_api else []
        return [*defines, *(f"-I{path}" for path in self.include_dirs)]

    def link_options(self) -> list[str]:
        options = [f"-L{path}" for path in self.library_dirs]
        # The build machine's wheel folders, for a library loaded where it was built.
        options += [f"-Wl,-rpath,{path}" for path in self.library_dirs]
        # TVM puts these options before the object files, where --as-needed would drop them.
        return [*options, "-Wl,--no-as-needed", *(f"-l:{name}" for name in self.libraries)]


def _nvidia_folders() -> list[Path]:
    """The folders of NVIDIA's pip wheels (``nvidia/cu13``, ``nvidia/cudnn``...)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [
        path
        for location in spec.submodule_search_locations
        for path in sorted(Path(location).iterdir())
        if path.is_dir()
    ]


def _find_file(name: str, subdir: str, extra: list[Path]) -> Path | None:
    for folder in [*(path / subdir for path in _nvidia_folders()), *extra]:
        if (folder / name).exists():
            return folder
    return None


def find_toolchain() -> VendorToolchain:
    """The include and library folders the shim needs, or a message that names what is missing."""
    import tvm_ffi

    cuda_home = [CUDA_HOME / "include", CUDA_HOME / "lib64"]
    wanted = {
        "cublasLt.h": "include",
        "cudnn.h": "include",
        "cuda_runtime_api.h": "include",
        "crt/host_defines.h": "include",
        "libcublasLt.so.13": "lib",
        "libcudnn.so.9": "lib",
        "libcudart.so.13": "lib",
    }
    found: dict[str, Path] = {}
    missing = []
    for name, subdir in wanted.items():
        folder = _find_file(name, subdir, cuda_home)
        if folder is None:
            missing.append(name)
        else:
            found[name] = folder
    if missing:
        raise VendorKernelsUnavailable(
            f"vendor kernels need {', '.join(missing)}: install NVIDIA's wheels with "
            "`pip install 'tunefarm[vendor]'` (nvidia-cublas, nvidia-cudnn-cu13, "
            "nvidia-cuda-runtime)"
        )
    nvcc = _find_nvcc()
    if nvcc is None:
        raise VendorKernelsUnavailable(
            "vendor kernels need nvcc, the CUDA toolkit's compiler, on PATH or in "
            f"{CUDA_HOME / 'bin'}: the library's depthwise convolutions are compiled with it"
        )
    includes = [Path(tvm_ffi.__file__).parent / "include"]
    includes += [found[name] for name in wanted if wanted[name] == "include"]
    libraries = [found[name] for name in wanted if wanted[name] == "lib"]
    # The graph API where its frontend's headers and NVRTC are here; else the legacy API only.
    frontend = _frontend_include()
    nvrtc_header = _find_file("nvrtc.h", "include", cuda_home[:1])
    nvrtc = _find_file(NVRTC, "lib", cuda_home[1:])
    graph_api = frontend is not None and nvrtc_header is not None and nvrtc is not None
    if graph_api:
        assert frontend is not None and nvrtc_header is not None and nvrtc is not None
        includes += [frontend, nvrtc_header]
        libraries.append(nvrtc)
    else:
        logger.info("vendor kernels: no cudnn_frontend.h or NVRTC here; cuDNN's legacy API only")
    return VendorToolchain(
        tuple(dict.fromkeys(includes)), tuple(dict.fromkeys(libraries)), nvcc, graph_api
    )


def _find_nvcc() -> Path | None:
    found = shutil.which("nvcc")
    if found is not None:
        return Path(found)
    bundled = CUDA_HOME / "bin" / "nvcc"
    return bundled if bundled.is_file() else None


def _frontend_include() -> Path | None:
    """The include folder of the nvidia-cudnn-frontend wheel (header-only C++)."""
    try:
        dist = importlib.metadata.distribution("nvidia-cudnn-frontend")
    except importlib.metadata.PackageNotFoundError:
        return None
    header = Path(str(dist.locate_file("include/cudnn_frontend.h")))
    return header.parent if header.is_file() else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunefarm" / "vendor"


def link_arguments(toolchain: VendorToolchain, cache_dir: Path | None = None) -> dict[str, Any]:
    """``export_library`` keywords that link the shim and the vendor libraries into a library."""
    objects = compile_shim(toolchain, cache_dir or default_cache_dir())
    return {"addons": [str(obj) for obj in objects], "options": toolchain.link_options()}


def register_in_process(
    toolchain: VendorToolchain | None = None, cache_dir: Path | None = None
) -> None:
    """Make the shim's functions global in this process, for executables not exported yet.

    An exported library finds them in itself; an ``Executable`` run in the building process
    (the graph-free profile build, the benchmarks) looks them up in the global registry.
    """
    import tvm_ffi

    if tvm.get_global_func(DEPTHWISE_FUNC, allow_missing=True) is not None:
        return
    toolchain = toolchain or find_toolchain()
    objects = compile_shim(toolchain, cache_dir or default_cache_dir())
    shared = objects[0].with_suffix(".so")
    if not shared.exists():
        partial = objects[0].with_suffix(".so.partial")
        subprocess.run(
            ["g++", "-shared", "-o", str(partial), *map(str, objects), *toolchain.link_options()],
            check=True,
            capture_output=True,
        )
        partial.rename(shared)
    preload_runtime_libraries(toolchain.libraries)
    module = tvm_ffi.load_module(str(shared))
    for name in VENDOR_FUNCS:
        tvm_ffi.register_global_func(name, module[name], override=True)


def _shim_sources() -> bytes:
    return b"".join(path.read_bytes() for path in (SHIM_SOURCE, *CUDA_SOURCES))


def shim_sources_key() -> str:
    """sha256 of the shim's and our kernels' sources: a vendor call timed with other sources
    (another variant list, a faster kernel) is timed again."""
    return hashlib.sha256(_shim_sources()).hexdigest()


def compile_shim(toolchain: VendorToolchain, cache_dir: Path) -> tuple[Path, ...]:
    """The shim's object file and our kernels' (``CUDA_SOURCES``), compiled once per source and
    header set into ``cache_dir``."""
    sources = _shim_sources()
    # The headers' version files too: an upgraded cuDNN, cuBLAS or frontend recompiles.
    versions = b"".join(
        (folder / name).read_bytes()
        for folder in toolchain.include_dirs
        for name in _VERSION_HEADERS
        if (folder / name).is_file()
    )
    key = hashlib.sha256(sources + repr(toolchain).encode() + versions).hexdigest()[:16]
    shim = cache_dir / f"tunefarm_vendor_{key}.o"
    kernels = tuple(cache_dir / f"tunefarm_{source.stem}_{key}.o" for source in CUDA_SOURCES)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _compile(
        shim,
        [
            "g++",
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-Wno-deprecated-declarations",
            *toolchain.compile_options(),
            "-c",
            str(SHIM_SOURCE),
        ],
        "the vendor kernel shim",
    )
    for source, obj in zip(CUDA_SOURCES, kernels, strict=True):
        compile_cuda(toolchain, source, obj)
    return (shim, *kernels)


def compile_cuda(toolchain: VendorToolchain, source: Path, obj: Path) -> None:
    """One of our kernels into ``obj``, for every GPU generation of ``NVCC_ARCHS``."""
    gencode = [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in NVCC_ARCHS]
    newest = NVCC_ARCHS[-1]
    _compile(
        obj,
        [
            str(toolchain.nvcc),
            "-std=c++17",
            "-O3",
            "-Xcompiler",
            "-fPIC",
            *gencode,
            f"-gencode=arch=compute_{newest},code=compute_{newest}",
            "-c",
            str(source),
        ],
        source.name,
    )


def _compile(obj: Path, command: list[str], what: str) -> None:
    """Run ``command`` (a compiler call) with ``-o`` into ``obj``, unless ``obj`` exists."""
    if obj.exists():
        return
    partial = obj.with_suffix(".o.partial")
    try:
        subprocess.run([*command, "-o", str(partial)], check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise VendorKernelsUnavailable(f"vendor kernels need {command[0]}") from err
    except subprocess.CalledProcessError as err:
        errors = [line for line in err.stderr.splitlines() if "error" in line]
        raise VendorKernelsUnavailable(
            f"{what} did not compile: {(errors or [command[0] + ' failed'])[0].strip()}"
        ) from err
    partial.rename(obj)


# ---------------------------------------------------------------------------------------------
# Loading a library that calls them


def preload_runtime_libraries(required: Sequence[str] = RUNTIME_LIBRARIES) -> list[str]:
    """Load the vendor libraries globally, so a library that links them finds them by soname.

    ``required`` are the sonames the library needs (its manifest's ``runtime_libraries``); one
    that does not load is a clear error here rather than a bare dlopen failure later. cuDNN's
    parts are loaded where they are found (cuDNN opens them itself when it needs them)."""
    loaded = []
    order = (*RUNTIME_LIBRARIES[:2], *_CUDNN_PARTS, RUNTIME_LIBRARIES[2])
    for name in (*order, *(name for name in required if name not in order)):
        folder = _find_file(name, "lib", [CUDA_HOME / "lib64"])
        target = str(folder / name) if folder is not None else name
        try:
            ctypes.CDLL(target, mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            if name in required:
                raise VendorKernelsUnavailable(
                    f"this library calls cuDNN and cuBLASLt, and {name} did not load ({err}); "
                    "install `tunefarm[vendor]` where it runs"
                ) from err
            continue
        loaded.append(target)
    return loaded
