"""Operator signatures: which workloads are alike, and how far apart their shapes are.

A workload (one TIR PrimFunc) is summarised by its *anchor block*: the reduction block with the
most iterations (a conv2d, a matmul, a pool), else the largest block (an injective op). The
signature says what the anchor computes (its kind, dtypes, layout, the role of each axis) and how
big it is (its iteration extents).

Two workloads are in the same **family** when a MetaSchedule trace of one has a chance to apply
to the other: the same kind, dtypes and layout, and the same blocks with the same axis roles.
Block names matter because a trace finds its blocks by name: a fused ``conv2d + add + relu`` and
a bare ``conv2d`` are different families. Within a family, the **distance** is the L2 norm of
the log2 ratios of the anchor's extents (0 for the same shape, 1 for one axis twice as long),
plus 1 for each differing stride. Across families it is infinite.

The family key is the sha256 of those fields and ``SIGNATURE_VERSION``: a change of the
heuristics below bumps the version, and older signatures stop matching new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import tvm_ffi
from tvm import tirx
from tvm.ir import IRModule
from tvm.s_tir import SBlock, Schedule

SIGNATURE_VERSION = 1

OperatorKind = Literal[
    "conv",
    "depthwise_conv",
    "group_conv",
    "conv_transpose",
    "dense",
    "batch_matmul",
    "pool",
    "reduce",
    "injective",
    "other",
]

AxisRole = Literal["S", "R", "O"]
"""Spatial (data-parallel), reduction, or other (ordered, opaque) iteration axis."""

# IterVar.iter_type values (tirx IterVarType): DataPar = 0, CommReduce = 2.
_DATA_PAR = 0
_COMM_REDUCE = 2

UNKNOWN_EXTENT = -1
"""A symbolic extent (a dynamic shape): equal to another symbolic one, far from any number."""

_UNKNOWN_EXTENT_DISTANCE = 4.0


@dataclass(frozen=True)
class BlockShape:
    name: str
    roles: str
    """One letter per iteration axis, ``SSSSRRR`` for an NHWC conv2d."""


@dataclass(frozen=True)
class OperatorSignature:
    kind: OperatorKind
    anchor: str
    """Name of the anchor block (``conv2d_nhwc``, ``matmul``, ``pool_max``)."""
    dtypes: tuple[str, ...]
    """Every dtype the blocks read or write, in order of first appearance."""
    layout: str
    """``NCHW``/``NHWC`` (and 1-d, 3-d kin) for convolutions and pools, ``NN``/``NT`` for
    matmuls (is the second operand transposed), empty when it cannot be told."""
    roles: str
    """The anchor's axis roles by position."""
    shape: tuple[int, ...]
    """The anchor's iteration extents by position (``UNKNOWN_EXTENT`` when symbolic)."""
    strides: tuple[int, ...]
    """Strides of the windowed axes of convolutions and pools; empty for other kinds."""
    blocks: tuple[BlockShape, ...]
    """Every block of the function (the anchor's producers and epilogue), in order."""
    version: int = SIGNATURE_VERSION

    @cached_property
    def family_key(self) -> str:
        """sha256 of what must match for a trace of one workload to apply to another."""
        family = {
            "version": self.version,
            "kind": self.kind,
            "anchor": self.anchor,
            "dtypes": list(self.dtypes),
            "layout": self.layout,
            "roles": self.roles,
            "blocks": [[block.name, block.roles] for block in self.blocks],
        }
        return hashlib.sha256(json.dumps(family, sort_keys=True).encode()).hexdigest()

    @property
    def size_log2(self) -> float:
        """log2 of the anchor's iteration count: the indexed coordinate of a lookup."""
        return sum(math.log2(extent) for extent in self.shape if extent > 0)

    def as_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "kind": self.kind,
                "anchor": self.anchor,
                "dtypes": list(self.dtypes),
                "layout": self.layout,
                "roles": self.roles,
                "shape": list(self.shape),
                "strides": list(self.strides),
                "blocks": [[block.name, block.roles] for block in self.blocks],
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> OperatorSignature:
        data: dict[str, Any] = json.loads(text)
        return OperatorSignature(
            kind=data["kind"],
            anchor=data["anchor"],
            dtypes=tuple(data["dtypes"]),
            layout=data["layout"],
            roles=data["roles"],
            shape=tuple(int(extent) for extent in data["shape"]),
            strides=tuple(int(stride) for stride in data["strides"]),
            blocks=tuple(BlockShape(name, roles) for name, roles in data["blocks"]),
            version=int(data["version"]),
        )


def shape_distance(a: OperatorSignature, b: OperatorSignature) -> float:
    """How far apart two workloads are: ``inf`` across families, else see the module doc."""
    if a.family_key != b.family_key:
        return math.inf
    return distance_in_family(a.shape, a.strides, b.shape, b.strides)


def distance_in_family(
    shape_a: Sequence[int],
    strides_a: Sequence[int],
    shape_b: Sequence[int],
    strides_b: Sequence[int],
) -> float:
    """``shape_distance`` of two signatures already known to be of one family."""
    if len(shape_a) != len(shape_b):
        return math.inf
    squares = 0.0
    for x, y in zip(shape_a, shape_b, strict=True):
        if x == y:
            continue
        if UNKNOWN_EXTENT in (x, y):
            squares += _UNKNOWN_EXTENT_DISTANCE**2
        else:
            squares += math.log2(x / y) ** 2
    stride_mismatches = sum(1 for x, y in zip(strides_a, strides_b, strict=False) if x != y)
    stride_mismatches += abs(len(strides_a) - len(strides_b))
    return math.sqrt(squares) + stride_mismatches


def max_size_gap(signature: OperatorSignature, distance: float) -> float:
    """The largest ``|size_log2 - size_log2'|`` of a workload within ``distance``.

    The size difference is the sum of the per-axis log2 ratios, so by Cauchy-Schwarz it is at
    most sqrt(rank) times their L2 norm; the stride term only adds to the distance.
    """
    return math.sqrt(max(len(signature.shape), 1)) * distance


def operator_signature(mod: IRModule) -> OperatorSignature:
    """The signature of a workload module (its one PrimFunc, or the one named ``main``)."""
    func_name = "main" if "main" in [gv.name_hint for gv in mod.get_global_vars()] else None
    if func_name is None:
        func_name = mod.get_global_vars()[0].name_hint
    sch = Schedule(IRModule({"main": mod[func_name]}))
    blocks = _blocks(sch)
    if not blocks:
        return OperatorSignature(
            kind="other",
            anchor="",
            dtypes=(),
            layout="",
            roles="",
            shape=(),
            strides=(),
            blocks=(),
        )
    anchor = _anchor(blocks)
    kind, layout, strides = _classify(anchor)
    return OperatorSignature(
        kind=kind,
        anchor=str(anchor.name_hint),
        dtypes=_dtypes(blocks),
        layout=layout,
        roles=_roles(anchor),
        shape=tuple(_extent(iter_var.dom.extent) for iter_var in anchor.iter_vars),
        strides=strides,
        blocks=tuple(BlockShape(str(block.name_hint), _roles(block)) for block in blocks),
    )


# -- reading the blocks ----------------------------------------------------------------------


def _blocks(sch: Schedule) -> list[SBlock]:
    """Every block below the root, depth first (workloads are nearly always one level)."""
    found: list[SBlock] = []
    pending = list(sch.get_child_blocks(sch.get_sblock("root")))
    while pending:
        block_rv = pending.pop(0)
        found.append(sch.get(block_rv))
        pending[:0] = list(sch.get_child_blocks(block_rv))
    return found


def _extent(expr: Any) -> int:
    return int(expr.value) if isinstance(expr, tirx.IntImm) else UNKNOWN_EXTENT


def _iterations(block: SBlock) -> int:
    total = 1
    for iter_var in block.iter_vars:
        total *= max(_extent(iter_var.dom.extent), 1)
    return total


def _roles(block: SBlock) -> str:
    letters = {_DATA_PAR: "S", _COMM_REDUCE: "R"}
    return "".join(letters.get(int(iter_var.iter_type), "O") for iter_var in block.iter_vars)


def _anchor(blocks: list[SBlock]) -> SBlock:
    """The reduction block with the most iterations, else the largest block (first wins)."""
    reductions = [block for block in blocks if "R" in _roles(block)]
    candidates = reductions or blocks
    return max(candidates, key=_iterations)  # max keeps the first of equals


def _dtypes(blocks: list[SBlock]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for block in blocks:
        for region in [*block.reads, *block.writes]:
            seen.setdefault(str(region.source.dtype), None)
    return tuple(seen)


def _vars_of(expr: Any) -> set[str]:
    names: set[str] = set()
    tvm_ffi.structural_walk(expr, (tirx.Var, lambda var: names.add(str(var.name))), order="post")
    return names


@dataclass(frozen=True)
class _Access:
    """One read of the anchor: which iteration axes each index position uses."""

    spatial: tuple[frozenset[str], ...]
    reduce: tuple[frozenset[str], ...]
    strides: tuple[int, ...]
    """For each position that mixes a spatial and a reduction axis: the spatial stride."""

    @property
    def windowed(self) -> tuple[int, ...]:
        return tuple(
            i for i, (s, r) in enumerate(zip(self.spatial, self.reduce, strict=True)) if s and r
        )

    @property
    def reduce_only(self) -> frozenset[str]:
        return frozenset().union(
            *(r for s, r in zip(self.spatial, self.reduce, strict=True) if r and not s)
        )

    @property
    def spatial_vars(self) -> frozenset[str]:
        return frozenset().union(*self.spatial)


def _accesses(block: SBlock) -> list[_Access]:
    spatial_axes = {str(iv.var.name) for iv in block.iter_vars if int(iv.iter_type) == _DATA_PAR}
    reduce_axes = {str(iv.var.name) for iv in block.iter_vars if int(iv.iter_type) == _COMM_REDUCE}
    accesses = []
    for region in block.reads:
        spatial, reduce, strides = [], [], []
        for index in region.region:
            used = _vars_of(index.min)
            spatial.append(frozenset(used & spatial_axes))
            reduce.append(frozenset(used & reduce_axes))
            if used & spatial_axes and used & reduce_axes:
                strides.append(_stride(index.min))
        accesses.append(_Access(tuple(spatial), tuple(reduce), tuple(strides)))
    return accesses


def _stride(index: Any) -> int:
    """The factor of ``v * stride + r``; 1 when the index has no such product."""
    for part in (index.a, index.b) if isinstance(index, tirx.Add) else (index,):
        if isinstance(part, tirx.Mul):
            for factor in (part.a, part.b):
                if isinstance(factor, tirx.IntImm):
                    return int(factor.value)
    return 1


_WINDOW_LAYOUTS = {
    (3, (2,)): "NCW",
    (3, (1,)): "NWC",
    (4, (2, 3)): "NCHW",
    (4, (1, 2)): "NHWC",
    (5, (2, 3, 4)): "NCDHW",
    (5, (1, 2, 3)): "NDHWC",
    (5, (2, 3)): "NCHWc",
}

_NAMED_LAYOUTS = ("ncdhw", "ndhwc", "nchwc", "nchw", "nhwc", "ncw", "nwc")


def _classify(anchor: SBlock) -> tuple[OperatorKind, str, tuple[int, ...]]:
    """Kind, layout and window strides of the anchor: from its name, else its accesses."""
    name = str(anchor.name_hint).lower()
    roles = _roles(anchor)
    accesses = _accesses(anchor)
    windowed = [access for access in accesses if access.windowed]
    data = windowed[0] if windowed else None
    strides = data.strides if data is not None else ()

    layout = ""
    for named in _NAMED_LAYOUTS:
        if named in name:
            layout = named.upper().replace("NCHWC", "NCHWc")
            break
    if not layout and data is not None:
        layout = _WINDOW_LAYOUTS.get((len(data.spatial), data.windowed), "")

    if "R" not in roles:
        return "injective", layout, ()
    if "transpose" in name and "conv" in name:
        return "conv_transpose", layout, strides
    if "depthwise" in name or "depth_conv" in name:
        return "depthwise_conv", layout, strides
    if "group" in name and "conv" in name:
        return "group_conv", layout, strides
    if "conv" in name:
        return "conv", layout, strides
    if "pool" in name:
        return "pool", layout, strides
    if data is not None:
        weights = [access for access in accesses if access is not data]
        if not weights:
            return "pool", layout, strides
        # A convolution also reduces over input channels, which data and weights index alone.
        if data.reduce_only & frozenset().union(*(w.reduce_only for w in weights)):
            return "conv", layout, strides
        return "depthwise_conv", layout, strides
    matmul = _matmul_kind(name, accesses)
    if matmul is not None:
        return matmul
    if len(accesses) == 1:
        return "reduce", "", ()
    return "other", "", ()


def _matmul_kind(
    name: str, accesses: list[_Access]
) -> tuple[OperatorKind, str, tuple[int, ...]] | None:
    """Dense or batch matmul: two operands that share the reduction axis."""
    operands = [access for access in accesses if access.reduce_only]
    if len(operands) < 2:
        return None
    lhs, rhs = operands[0], operands[1]
    if not lhs.reduce_only & rhs.reduce_only:
        return None
    # B is "N" when indexed [..., k, j], "T" when [..., j, k] (T_matmul_NT, dense).
    last_is_reduce = bool(rhs.reduce[-1]) if rhs.reduce else False
    layout = "NT" if last_is_reduce else "NN"
    if name.endswith("_nt"):
        layout = "NT"
    elif name.endswith("_nn"):
        layout = "NN"
    shared_spatial = lhs.spatial_vars & rhs.spatial_vars
    return ("batch_matmul" if shared_spatial else "dense"), layout, ()
