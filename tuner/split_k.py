"""Split-K for CUDA tensor-core tasks: a schedule rule of ours, beside MetaSchedule's.

A convolution or matmul with few output values (ResNet's 7x7 and 14x14 stages, BERT's GEMMs at
sequence 128) tiles into fewer thread blocks than the GPU has SMs: a 7x7x512 output in 64x64
tiles is 8 blocks for the H100's 132 SMs, each walking the whole reduction alone. cuDNN and
cuBLAS split the reduction there; MetaSchedule's CUDA rules cannot express it.

``SplitKTensorCore`` gives such a block, besides its usual sketches, one sketch per split factor
S: the largest reduction loop (the input channels, or K) is split S ways and ``rfactor``-ed, so
a new block computes S partial outputs side by side (S more thread blocks, each with a 1/S of
the reduction) and is tiled by the tensor-core rules themselves; the original block becomes the
sum over S, one thread an output value, with the elementwise epilogue (bias, ReLU, the fp16
cast) computed by the same thread: two kernels where there was one. The partial outputs have
the block's own accumulation type (fp16 where our ``--fp16`` pipeline accumulates in fp16, fp32
where a block sums in fp32), so a split changes only the order of the sums: each chain is S
times shorter.

A record's trace holds the split and the ``rfactor`` as plain schedule instructions: a build
replays it without this rule. The rule only widens the search; ``SearchSettings.split_k``
(``TUNEFARM_SEARCH_SPLIT_K``) turns it on.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.schedule_rule import PyScheduleRule
from tvm.s_tir.schedule import SBlockRV, Schedule, ScheduleError
from tvm.target import Target
from tvm.tirx import IterVar

from tunefarm.tuner.tensor_intrinsics import load_tensor_intrinsics

_log = logging.getLogger(__name__)
_get_sblock_realize = tvm_ffi.get_global_func("s_tir.schedule.GetSBlockRealize")

SPLIT_FACTORS = (2, 4, 8)
MAX_OUTPUT_VALUES = 1 << 19
"""Blocks with more output values already fill the GPU: 2^19 values are 128 tiles of 64x64."""
MAX_SPLIT_TILES = 256
"""A factor is tried while the 64x64 output tiles times S stay within about two waves of an
H100's or H200's 132 SMs (the GPUs it was measured on; fewer SMs would want fewer splits): more
splits only add partial outputs to sum."""
MIN_REDUCTION = 512
"""A block whose whole reduction is shorter is left alone: its one pass is short already."""
MIN_SPLIT_EXTENT = 16
"""The split loop keeps at least one tensor-core step (k = 16) per split."""
SUM_THREADS = (64, 128, 256)
"""Threads a block of the sum's kernel, sampled: the search picks."""


def tensor_core_arch(target: Target) -> bool:
    """True where MetaSchedule picks its tensor-core rules (``cuda``, ``arch`` sm_75 and up)."""
    if target.kind.name != "cuda":
        return False
    arch = str(target.attrs.get("arch", ""))
    digits = "".join(itertools.takewhile(str.isdigit, arch.removeprefix("sm_")))
    return arch.startswith("sm_") and bool(digits) and int(digits) >= 75  # sm_90a too


def space_generator(target: Target, *, split_k: bool) -> ms.SpaceGenerator | str:
    """The design space generator of a task on ``target``: MetaSchedule's own, or, with
    ``split_k`` on a tensor-core target, its rules with ``SplitKTensorCore`` before the
    tensor-core tiling."""
    if not (split_k and tensor_core_arch(target)):
        return "post-order-apply"
    load_tensor_intrinsics(target)  # the tensor-core rules name them
    rules = list(ms.ScheduleRule.create("cuda-tensorcore"))
    # ApplyCustomRule first, as MetaSchedule has it; the split sketches come before the
    # generic rules see the blocks.
    rules.insert(1, SplitKTensorCore())
    return ms.space_generator.PostOrderApply(
        sch_rules=rules, postprocs="cuda-tensorcore", mutator_probs="cuda-tensorcore"
    )


def _tensor_core_tiling() -> list[ms.ScheduleRule]:
    return [
        rule
        for rule in ms.ScheduleRule.create("cuda-tensorcore")
        if isinstance(rule, ms.schedule_rule.MultiLevelTilingTensorCore)
    ]


@derived_object
class SplitKTensorCore(PyScheduleRule):
    """Split-K sketches of a small-output tensor-core block (module docstring)."""

    def __init__(self, factors: tuple[int, ...] = SPLIT_FACTORS) -> None:
        super().__init__()
        self.factors = tuple(sorted(factors))
        self._tiling = _tensor_core_tiling()

    def _initialize_with_tune_context(self, context: ms.TuneContext) -> None:
        for rule in self._tiling:
            rule._initialize_with_tune_context(context)

    def apply(self, sch: Schedule, block: SBlockRV) -> list[Schedule]:
        split = _reduction_to_split(sch, block)
        if split is None:
            return [sch]
        index, extent, outputs = split
        tiles = -(-outputs // (64 * 64))
        spaces = [sch]
        for factor in self.factors:
            if tiles * factor > MAX_SPLIT_TILES:
                break
            if extent % factor == 0 and extent // factor >= MIN_SPLIT_EXTENT:
                spaces.extend(self._split_sketches(sch, block, index, factor))
        return spaces

    def clone(self) -> SplitKTensorCore:
        return SplitKTensorCore(self.factors)

    def _split_sketches(
        self, sch: Schedule, block: SBlockRV, index: int, factor: int
    ) -> list[Schedule]:
        split = sch.copy()
        split.seed(sch.fork_seed())
        try:
            loops = split.get_loops(block)
            outer, _ = split.split(loops[index], [factor, None])
            if index > 0:
                # The split loop outermost: the new block's iterators then follow its loops
                # (a trivial binding, which the tensor-core tiling requires).
                split.reorder(outer, *loops[:index])
            partial = split.rfactor(outer, factor_axis=0)
        except ScheduleError:  # the block is not a plain sum of products
            return []
        except Exception:  # TVM's own checks: the task keeps MetaSchedule's sketches
            _log.warning("no split-K sketch for this block", exc_info=True)
            return []
        steps = len(split.trace.insts)
        sketches: list[Schedule] = []
        for rule in self._tiling:
            tiled = split.copy()
            tiled.seed(split.fork_seed())
            # A rule that does not map the block to its intrinsics returns it untouched.
            for sketch in rule.apply(tiled, partial):
                if len(sketch.trace.insts) == steps:
                    continue
                try:
                    _sum_with_epilogue(sketch, block)
                except ScheduleError:  # this sketch's sum cannot be laid out so: drop it
                    continue
                except Exception:
                    _log.warning("a split-K sketch was dropped", exc_info=True)
                    continue
                sketches.append(sketch)
        return sketches


def _sum_with_epilogue(sch: Schedule, block: SBlockRV) -> None:
    """One kernel sums the S partial outputs and applies the elementwise epilogue after it.

    After ``rfactor`` the sum's loop over S is outermost, which leaves no spatial loop for the
    generic rules to bind to threads (they give it one thread), and the epilogue cannot be
    inlined into a reduction: it would be a third kernel. So the output loops go outside and are
    bound here, and each elementwise consumer is computed under the same thread.
    """
    loops = sch.get_loops(block)
    sch.reorder(*loops[1:], loops[0])
    output = sch.fuse(*loops[1:])
    threads = sch.sample_categorical(list(SUM_THREADS), [1 / len(SUM_THREADS)] * len(SUM_THREADS))
    blocks, thread = sch.split(output, [None, threads])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    consumer = block
    while True:
        consumers = sch.get_consumers(consumer)
        if len(consumers) != 1:
            break
        try:
            sch.reverse_compute_at(consumers[0], thread, preserve_unit_loops=False)
        except ScheduleError:  # not elementwise on the sum's output: a kernel of its own
            break
        if consumer is block:
            # Its one reader is under the same thread (compute-at refuses one that reads other
            # threads' values): the sum stays in a register.
            try:
                sch.set_scope(block, 0, "local")
            except ScheduleError:
                pass  # a buffer the function returns stays in global memory
        consumer = consumers[0]


def _reduction_to_split(sch: Schedule, block: SBlockRV) -> tuple[int, int, int] | None:
    """(loop index, extent) of the reduction loop to split and the block's output values,
    where the block is worth it."""
    stmt: Any = sch.get(block)
    if stmt.init is None or len(stmt.writes) != 1:
        return None
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars) or len(sch.get_child_blocks(loops[0])) != 1:
        return None
    bindings = _get_sblock_realize(sch, block).iter_values
    if not all(
        value.same_as(sch.get(loop).loop_var) for value, loop in zip(bindings, loops, strict=True)
    ):
        return None  # not one loop per iterator, in order (a trivial binding)
    extents = [int(sch.get(loop).extent) for loop in loops]
    reduce = [i for i, var in enumerate(stmt.iter_vars) if var.iter_type == IterVar.CommReduce]
    spatial = [i for i, var in enumerate(stmt.iter_vars) if var.iter_type == IterVar.DataPar]
    if not reduce or len(reduce) + len(spatial) != len(loops):
        return None
    outputs = math.prod(extents[i] for i in spatial)
    if outputs > MAX_OUTPUT_VALUES:
        return None
    if math.prod(extents[i] for i in reduce) < MIN_REDUCTION:
        return None
    index = max(reduce, key=lambda i: (extents[i], i))
    return index, extents[index], outputs
