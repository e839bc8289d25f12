"""cuDNN convolutions and cuBLASLt matmuls in place of tuned kernels, on CUDA targets (issue 17).

MetaSchedule's CUDA search space has no split-K and no Hopper instructions, so the convolutions
and matmuls with few output rows (ResNet's last stages, a batch-1 classifier) stay far from
what the vendor libraries reach. This module:

- rewrites each eligible convolution or matmul chain of the Relax graph, with its bias, residual
  add and ReLU, into one ``call_dps_packed`` to a function of ``vendor_shim.cc``;
- compiles that shim against the cuDNN and cuBLASLt headers of NVIDIA's pip wheels, so the
  exported library carries the calls (a Python callback would keep only its name);
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

from tunefarm.tuner.errors import UserInputError

logger = logging.getLogger(__name__)

CONV_FUNC = "tunefarm_cudnn_conv2d"
MATMUL_FUNC = "tunefarm_cublaslt_matmul"
SHIM_SOURCE = Path(__file__).with_name("vendor_shim.cc")
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
) -> tuple[IRModule, Counter[str]]:
    """``mod`` with every eligible chain in ``main`` replaced; how many of each function.

    ``conv_epilogue=False`` hands cuDNN the convolutions alone: their bias, residual and ReLU
    stay in the graph, where TVM fuses them into one elementwise kernel. ``select`` keeps some of
    the eligible chains (``vendor_choice``: the faster of tuned and vendor); by default all.
    ``tf32`` lets fp32 calls round their inputs to TF32 on the tensor cores, as torch's cuDNN
    convolutions do by default; fp32 stays exact otherwise.
    """
    function = mod["main"]
    calls = _find_chains(function, conv_epilogue=conv_epilogue, tf32=tf32)
    if select is not None:
        kept = select(calls)
        calls = {end: call for end, call in calls.items() if end in kept}
    if not calls:
        return mod, Counter()
    mod = _ChainRewriter(mod, calls).rewrite_main()
    # The chains' old bindings are unused now; nothing may legalize or tune them.
    mod = relax.transform.DeadCodeElimination()(mod)
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
        if _op_name(expr) == "relax.call_dps_packed":
            assert isinstance(expr, relax.Call)
            name = getattr(expr.args[0], "global_symbol", None)
            if name in (CONV_FUNC, MATMUL_FUNC):
                counts[str(name)] += 1

    for function in mod.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function.body, visit)
    return counts


def _op_name(expr: relax.Expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return None


def _tensor_info(expr: relax.Expr) -> relax.TensorType | None:
    info = expr.ty
    if isinstance(info, relax.TensorType) and info.shape is not None:
        return info
    return None


def _static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    info = _tensor_info(expr)
    if info is None or not isinstance(info.shape, relax.ShapeExpr):
        return None
    dims = []
    for dim in info.shape.values:
        if not isinstance(dim, tvm.tirx.IntImm):
            return None
        dims.append(int(dim))
    return tuple(dims)


def _dtype(expr: relax.Expr) -> str | None:
    info = _tensor_info(expr)
    return str(info.dtype) if info is not None else None


def _use_counts(function: relax.Function) -> Counter[relax.Var]:
    counts: Counter[relax.Var] = Counter()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] += 1

    relax.analysis.post_order_visit(function.body, visit)
    return counts


def _bias_vector(expr: relax.Expr, channels: int, dtype: str) -> Constant | None:
    """A constant that broadcasts along the last axis only, as a 1-D constant of ``channels``."""
    if not isinstance(expr, Constant) or _dtype(expr) != dtype:
        return None
    shape = _static_shape(expr)
    if shape is None or not shape or shape[-1] != channels or any(d != 1 for d in shape[:-1]):
        return None
    return relax.const(expr.value.numpy().reshape(channels), dtype)


def _anchor(value: relax.Expr) -> tuple[str, tuple[int, ...], relax.Expr, Constant] | None:
    """(function, config head, x, weight) for a convolution or matmul the shim can run."""
    op = _op_name(value)
    if op not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    assert isinstance(value, relax.Call)
    x, weight = value.args[0], value.args[1]
    dtype = _dtype(value)
    if dtype not in ("float16", "float32") or _dtype(x) != dtype or _dtype(weight) != dtype:
        return None
    x_shape = _static_shape(x)
    if x_shape is None or len(x_shape) < 2 or _static_shape(value) is None:
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
        kernel = _static_shape(weight)
        assert kernel is not None
        if kernel[1:3] == (1, 1) and strides == [1, 1] and top == left == 0 and attrs.groups == 1:
            # A 1x1 convolution over NHWC data is a GEMM: [N*H*W, C] x [C, K], the OHWI weight
            # being [K, C] transposed. cuBLASLt runs it on Hopper kernels, where cuDNN's legacy
            # API falls back to implicit_convolve_sgemm (bench/results/vendor_profile-h200-*).
            as_matrix = relax.const(weight.value.numpy().reshape(kernel[0], kernel[3]), dtype)
            return MATMUL_FUNC, (1,), x, as_matrix
        return CONV_FUNC, (*strides, top, left, *dilation, int(attrs.groups)), x, weight
    shape = _static_shape(weight)
    if shape is not None and len(shape) == 2 and isinstance(weight, Constant):
        return MATMUL_FUNC, (0,), x, weight
    return None


def _find_chains(
    function: relax.Function, *, conv_epilogue: bool, tf32: bool = False
) -> dict[relax.Var, VendorCall]:
    """Each chain's last variable, with the vendor call that computes it."""
    uses = _use_counts(function)
    bindings: dict[relax.Var, relax.Expr] = {}
    users: dict[relax.Var, list[relax.Var]] = {}
    body = function.body
    if not isinstance(body, relax.SeqExpr):
        return {}
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                continue
            bindings[binding.var] = binding.value
            if isinstance(binding.value, relax.Call):
                for arg in binding.value.args:
                    if isinstance(arg, relax.Var):
                        users.setdefault(arg, []).append(binding.var)
    chains: dict[relax.Var, VendorCall] = {}
    # A binding belongs to one chain at most: where two branches meet in a residual add, the
    # first chain takes the add and the other ends before it.
    claimed: set[relax.Var] = set()

    def sole_user(var: relax.Var) -> relax.Var | None:
        """The one binding that uses ``var``, if no chain has taken it."""
        if uses[var] != 1 or len(users.get(var, [])) != 1 or users[var][0] in claimed:
            return None
        return users[var][0]

    for var, value in bindings.items():
        anchor = _anchor(value)
        if anchor is None:
            continue
        func, head, x, weight = anchor
        out_shape = _static_shape(value)
        dtype = _dtype(value)
        assert out_shape is not None and dtype is not None
        channels = out_shape[-1]
        bias: Constant | None = None
        residual: relax.Expr | None = None
        relu = False
        chain: list[tuple[relax.Var, relax.Call]] = [(var, value)]  # type: ignore[list-item]
        end = var
        plain = func == CONV_FUNC and not conv_epilogue
        while not plain and not relu:
            user = sole_user(end)
            if user is None:
                break
            user_value = bindings[user]
            op = _op_name(user_value)
            if op == "relax.nn.relu":
                relu = True
            elif op == "relax.add" and residual is None:
                assert isinstance(user_value, relax.Call)
                left, right = user_value.args
                other = right if left.same_as(end) else left
                vector = None if bias is not None else _bias_vector(other, channels, dtype)
                if vector is not None:
                    bias = vector
                elif (
                    isinstance(other, relax.Var)
                    and left.same_as(end)
                    and _static_shape(other) == out_shape
                    and _dtype(other) == dtype
                ):
                    # A residual add joins the chain of its first operand, as TVM's FuseOps
                    # fuses it (ResNet's main branch, not the shortcut): the chain is then the
                    # task the database knows (tuner.vendor_choice).
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
            if _op_name(bindings[user]) != "relax.astype":
                break
            tail.append((user, bindings[user]))  # type: ignore[arg-type]
            last = user
        if bias is None:
            bias = relax.const(np.zeros(channels, dtype=dtype), dtype)
        config = (*head, int(relu), int(residual is not None))
        if func == CONV_FUNC:
            config += (int(plain),)
        config += (int(tf32 and dtype == "float32"),)
        chains[end] = VendorCall(
            func, x, weight, bias, residual, config, tuple(chain), end.ty, tuple(tail)
        )
    return chains


@relax.expr_functor.mutator
class _ChainRewriter(relax.PyExprMutator):  # type: ignore[misc]
    def __init__(self, mod: IRModule, calls: dict[relax.Var, VendorCall]) -> None:
        super().__init__(mod)
        self.calls = calls

    def rewrite_main(self) -> IRModule:
        main = self.builder_.get().get_global_var("main")
        self.builder_.update_func(main, self.visit_expr(self.builder_.get()[main]))
        return self.builder_.get()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = self.calls.get(binding.var)
        if call is None:
            super().visit_var_binding_(binding)
            return
        x = self.visit_expr(call.x)
        residual = self.visit_expr(call.residual) if call.residual is not None else None
        value = vendor_call_expr(call, x, residual, out_ty=binding.var.ty)
        value = self.builder_.normalize(value)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))


# ---------------------------------------------------------------------------------------------
# Building the shim


@dataclass(frozen=True)
class VendorToolchain:
    include_dirs: tuple[Path, ...]
    library_dirs: tuple[Path, ...]
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
        tuple(dict.fromkeys(includes)), tuple(dict.fromkeys(libraries)), graph_api
    )


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
    obj = compile_shim(toolchain, cache_dir or default_cache_dir())
    return {"addons": [str(obj)], "options": toolchain.link_options()}


def register_in_process(
    toolchain: VendorToolchain | None = None, cache_dir: Path | None = None
) -> None:
    """Make the shim's functions global in this process, for executables not exported yet.

    An exported library finds them in itself; an ``Executable`` run in the building process
    (the graph-free profile build, the benchmarks) looks them up in the global registry.
    """
    import tvm_ffi

    if tvm.get_global_func(CONV_FUNC, allow_missing=True) is not None:
        return
    toolchain = toolchain or find_toolchain()
    obj = compile_shim(toolchain, cache_dir or default_cache_dir())
    shared = obj.with_suffix(".so")
    if not shared.exists():
        partial = obj.with_suffix(".so.partial")
        subprocess.run(
            ["g++", "-shared", "-o", str(partial), str(obj), *toolchain.link_options()],
            check=True,
            capture_output=True,
        )
        partial.rename(shared)
    preload_runtime_libraries(toolchain.libraries)
    module = tvm_ffi.load_module(str(shared))
    for name in (CONV_FUNC, MATMUL_FUNC):
        tvm_ffi.register_global_func(name, module[name], override=True)


def compile_shim(toolchain: VendorToolchain, cache_dir: Path) -> Path:
    """The shim's object file, compiled once per source and header set into ``cache_dir``."""
    source = SHIM_SOURCE.read_bytes()
    # The headers' version files too: an upgraded cuDNN, cuBLAS or frontend recompiles.
    versions = b"".join(
        (folder / name).read_bytes()
        for folder in toolchain.include_dirs
        for name in _VERSION_HEADERS
        if (folder / name).is_file()
    )
    key = hashlib.sha256(source + repr(toolchain).encode() + versions).hexdigest()[:16]
    obj = cache_dir / f"tunefarm_vendor_{key}.o"
    if obj.exists():
        return obj
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = obj.with_suffix(".o.partial")
    command = [
        "g++",
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-Wno-deprecated-declarations",
        *toolchain.compile_options(),
        "-c",
        str(SHIM_SOURCE),
        "-o",
        str(partial),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise VendorKernelsUnavailable("vendor kernels need a C++ compiler (g++)") from err
    except subprocess.CalledProcessError as err:
        errors = [line for line in err.stderr.splitlines() if "error" in line]
        raise VendorKernelsUnavailable(
            f"the vendor kernel shim did not compile: {(errors or ['g++ failed'])[0].strip()}"
        ) from err
    partial.rename(obj)
    return obj


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
