"""Named graph-pass pipelines that run between import and task extraction.

Each pipeline is one readable sequence in phases. ``run_pipeline`` logs between phases and
reports what fused, so a job can say which operators ended up in which kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import IRModule
from tvm.target import Target

from tunefarm.tuner.channel_padding import pad_output_channels
from tunefarm.tuner.cpu_schedule_rules import CpuShape
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.fold_scale_shift import fold_scale_shift_pass
from tunefarm.tuner.fused_attention import fused_attention_pass
from tunefarm.tuner.fused_layer_norm import fused_layer_norm_pass
from tunefarm.tuner.targets import is_gpu
from tunefarm.tuner.vendor_kernels import VendorSelect, offload_pass, require_cuda

logger = logging.getLogger(__name__)

Layout = Literal["NCHW", "NHWC", "auto"]


@dataclass(frozen=True)
class PipelineOptions:
    layout: Layout = "auto"
    fp16: bool = False
    vendor_kernels: bool = False
    """Offload convolutions and matmuls to cuDNN and cuBLASLt (CUDA targets only)."""
    vendor_select: VendorSelect | None = field(default=None, compare=False, repr=False)
    """Which eligible chains go to the vendor (``vendor_choice.selector``); None: all."""
    tf32: bool = False
    """fp32 vendor calls may use TF32 tensor cores (as torch's cuDNN convolutions do)."""


@dataclass(frozen=True)
class Phase:
    name: str
    passes: list[tvm.transform.Pass]


@dataclass(frozen=True)
class FusedKernel:
    name: str
    ops: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ops": self.ops}


@dataclass(frozen=True)
class PipelineResult:
    mod: IRModule
    pipeline: str
    phases: list[str]
    layout: str
    fused: list[FusedKernel]


def resolve_layout(layout: Layout, target: Target) -> Literal["NCHW", "NHWC"]:
    """``auto`` is NHWC: channels innermost is what GPU tensor cores and the CPU default
    schedules (``tuner.cpu_schedule_rules``, which vectorize over channels) both want."""
    if layout == "auto":
        return "NHWC"
    return layout


def kernel_layout(target: Target) -> str:
    """Conv weights to go with NHWC data: output channels innermost on CPUs, so a vector of
    output channels is one load; OHWI on GPUs, where the tensor-core rules expect it."""
    return "OHWI" if is_gpu(target) else "HWIO"


def default_phases(target: Target, options: PipelineOptions) -> list[Phase]:
    layout = resolve_layout(options.layout, target)
    phases = [
        # Inference-only rewrites: batch norm into scale/shift, constants folded.
        Phase(
            "inference-cleanup",
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.transform.FoldConstant(),
                # Batch norm into the convolution's weights and bias, as ONNX exports it.
                fold_scale_shift_pass(),
            ],
        ),
    ]
    layout_passes: list[tvm.transform.Pass] = []
    if layout == "NHWC":
        layout_passes.append(
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", kernel_layout(target)]})
        )
    if options.fp16:
        layout_passes.append(relax.transform.ToMixedPrecision(out_dtype="float16"))
        # The cast a tensor gets before each of its fp16 readers, once: BERT's query, key and
        # value projections each cast the same layer norm output (3 kernels a layer, now 1).
        layout_passes.append(relax.transform.EliminateCommonSubexpr())
    if layout_passes:
        # Layout and precision change op attributes, so they run before legalization.
        layout_passes.append(relax.transform.FoldConstant())
        if layout == "NHWC" and not is_gpu(target) and not options.fp16:
            # Whole vector registers for the CPU default schedules (ShuffleNet's 58 channels).
            layout_passes.append(pad_output_channels(CpuShape.of(target).lanes("float32")))
        phases.append(Phase("layout-and-precision", layout_passes))
    if options.vendor_kernels:
        require_cuda(target)
        # Before legalization, while convolutions, bias adds and ReLUs are still Relax ops.
        offload = offload_pass(options.vendor_select, tf32=options.tf32)
        # Attention and layer norms first: the projections around them stay the matmul chains
        # they are.
        fused = [fused_attention_pass(), fused_layer_norm_pass()]
        phases.append(Phase("vendor-kernels", [*fused, offload]))
    phases += [
        # Every Relax op becomes a TIR PrimFunc with an op pattern that fusion reads.
        Phase(
            "legalize",
            [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
            ],
        ),
        # Operators fuse into kernels; each fused kernel is one tuning task.
        Phase("fuse", [relax.transform.FuseOps(), relax.transform.FuseTIR()]),
        Phase("cleanup", [relax.transform.DeadCodeElimination()]),
    ]
    return phases


PIPELINES: dict[str, Callable[[Target, PipelineOptions], list[Phase]]] = {
    "tunefarm-default": default_phases,
}


def run_pipeline(
    mod: IRModule,
    *,
    target: Target,
    options: PipelineOptions,
    name: str = "tunefarm-default",
) -> PipelineResult:
    """Run the named pipeline on ``mod`` for ``target`` and report what fused."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}")
    phases = PIPELINES[name](target, options)
    original = mod
    fused: list[FusedKernel] = []
    with target, tvm.transform.PassContext(opt_level=3), _constant_builds_cached():
        for phase in phases:
            if phase.name == "fuse":
                fused_ops = relax.transform.FuseOps()(mod)
                fused = _fused_kernels(fused_ops)
            try:
                mod = tvm.transform.Sequential(phase.passes, name=phase.name)(mod)
            except Exception as err:
                if phase.name != "layout-and-precision":
                    raise
                if options.layout == "auto" and resolve_layout("auto", target) == "NHWC":
                    # "auto" is a preference, not a demand: a graph TVM's ConvertLayout cannot
                    # take (a transformer block with an attention mask: std::bad_alloc) keeps
                    # its own layout.
                    logger.info("NHWC failed (%s); keeping the model's layout", _first_line(err))
                    return run_pipeline(
                        original,
                        target=target,
                        options=replace(options, layout="NCHW"),
                        name=name,
                    )
                # TVM's layout and precision rewrites do not handle every graph (MobileNetV2's
                # fp16 fails in ToMixedPrecision): the user can compile without the option.
                raise UserInputError(
                    f"{_option_text(options, target)} is not supported for this model: TVM's "
                    f"{phase.name} passes failed ({_first_line(err)}); "
                    "compile it without that option"
                ) from err
            logger.info("pipeline %s: phase %s done", name, phase.name)
    return PipelineResult(
        mod=mod,
        pipeline=name,
        phases=[phase.name for phase in phases],
        layout=resolve_layout(options.layout, target),
        fused=fused,
    )


@contextmanager
def _constant_builds_cached() -> Iterator[None]:
    """Build each PrimFunc that FoldConstant evaluates once, not once per call.

    FoldConstant compiles a folded call's PrimFunc with LLVM through the global
    ``tirx.build``. TVM 0.27 caches those builds, but looks the cache up with the function
    before it adds the global symbol and fills it after, so it never hits: ResNet-50 fp16 made
    268 builds of 61 distinct functions, half the pipeline's time. A build depends only on
    the function's structure and the target, so a structural cache returns the same module.
    """
    original = tvm.get_global_func(_BUILD_FUNC)
    built: dict[int, list[tuple[tvm.tirx.PrimFunc, str, tvm.runtime.Module]]] = {}

    def cached_build(func: Any, target: Target | None = None, *rest: Any) -> Any:
        if rest or not isinstance(func, tvm.tirx.PrimFunc):
            return original(func, target, *rest)
        bucket = built.setdefault(tvm_ffi.structural_hash(func), [])
        for known, known_target, module in bucket:
            if known_target == str(target) and tvm_ffi.structural_equal(known, func):
                return module
        module = original(func, target)
        bucket.append((func, str(target), module))
        return module

    tvm.register_global_func(_BUILD_FUNC, cached_build, override=True)
    try:
        yield
    finally:
        tvm.register_global_func(_BUILD_FUNC, original, override=True)


_BUILD_FUNC = "tirx.build"


def _option_text(options: PipelineOptions, target: Target) -> str:
    chosen = []
    if options.fp16:
        chosen.append("--fp16")
    if resolve_layout(options.layout, target) == "NHWC":
        chosen.append("the NHWC layout")
    return " with ".join(chosen)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # TVM puts the message on the last line, under its C++ stack.
    return lines[-1] if lines else type(err).__name__


def _fused_kernels(mod: IRModule) -> list[FusedKernel]:
    """The primitive functions FuseOps made, each with the ops it called, in module order."""
    kernels = []
    for global_var, function in mod.functions.items():
        if not isinstance(function, relax.Function):
            continue
        if not function.attrs or int(function.attrs.get("Primitive", 0)) != 1:
            continue
        ops: list[str] = []

        def visit(expr: relax.Expr, ops: list[str] = ops) -> None:
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
                if expr.op.name == "relax.call_tir":
                    ops.append(expr.args[0].name_hint)
                else:
                    ops.append(expr.op.name)

        relax.analysis.post_order_visit(function.body, visit)
        kernels.append(FusedKernel(name=global_var.name_hint, ops=ops))
    return sorted(kernels, key=lambda kernel: kernel.name)
