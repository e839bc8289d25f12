"""The similarity index: nearest workloads of the same operator family, by an indexed query.

Each workload has a row in ``workload_signatures`` (written with the workload). A lookup reads the
new workload's family in ``size_log2`` order on both sides of its own size, through the index on
``(family_key, size_log2)``, a few dozen rows at a time, and computes the exact distance of those
rows in Python. It stops once no unread row can be nearer than the neighbours found: a row at
size gap g is at distance at least g / sqrt(rank) (see ``max_size_gap``). Past ``MAX_WINDOW`` rows
per side it answers with the neighbours found so far.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from tvm.ir import IRModule

from tuning_db.operator_signature import (
    OperatorSignature,
    max_size_gap,
    operator_signature,
    shape_distance,
)
from tuning_db.schema import Base, WorkloadSignatureRow

_signatures = Base.metadata.tables[WorkloadSignatureRow.__tablename__]

FIRST_WINDOW = 32
MAX_WINDOW = 4096


@dataclass(frozen=True)
class Neighbour:
    workload_id: int
    distance: float


def signature_values(
    workload_id: int, mod: IRModule | None, *, workload_key: str
) -> dict[str, Any]:
    """The ``workload_signatures`` row of a workload.

    A module the signature code cannot read (or None: a stored module that no longer loads)
    gets a family of its own, from its workload key: filing it never fails, and it is simply
    nobody's neighbour.
    """
    try:
        if mod is None:
            raise ValueError("no module")
        signature = operator_signature(mod)
        family_key = signature.family_key
    except Exception:  # a workload is filed even if the heuristics cannot read it
        signature = OperatorSignature(
            kind="other", anchor="", dtypes=(), layout="", roles="", shape=(), strides=(), blocks=()
        )
        family_key = hashlib.sha256(f"unreadable:{workload_key}".encode()).hexdigest()
    return {
        "workload_id": workload_id,
        "family_key": family_key,
        "kind": signature.kind,
        "size_log2": signature.size_log2,
        "signature_json": signature.as_json(),
        "version": signature.version,
    }


def nearest_workloads(
    connection: Connection,
    signature: OperatorSignature,
    *,
    limit: int,
    exclude: Iterable[int] = (),
    accept: Callable[[list[int]], set[int]] | None = None,
) -> list[Neighbour]:
    """The ``limit`` nearest workloads of the signature's family, nearest first.

    ``exclude``: workload ids never returned (the workload itself). ``accept``: given candidate
    ids, the ones that qualify (those with records, say); it is asked once per widening.
    """
    if limit <= 0:
        return []
    family_key = signature.family_key
    size = signature.size_log2
    excluded = set(exclude)
    window = FIRST_WINDOW
    while True:
        above = connection.execute(
            select(_signatures.c.workload_id, _signatures.c.size_log2, _signatures.c.signature_json)
            .where(_signatures.c.family_key == family_key, _signatures.c.size_log2 >= size)
            .order_by(_signatures.c.size_log2, _signatures.c.workload_id)
            .limit(window)
        ).all()
        below = connection.execute(
            select(_signatures.c.workload_id, _signatures.c.size_log2, _signatures.c.signature_json)
            .where(_signatures.c.family_key == family_key, _signatures.c.size_log2 < size)
            .order_by(_signatures.c.size_log2.desc(), _signatures.c.workload_id)
            .limit(window)
        ).all()
        candidates: dict[int, float] = {}
        for row in [*above, *below]:
            if row.workload_id in excluded:
                continue
            distance = shape_distance(signature, OperatorSignature.from_json(row.signature_json))
            if math.isfinite(distance):
                candidates[int(row.workload_id)] = distance
        qualified = set(candidates) if accept is None else accept(sorted(candidates))
        found = sorted(
            (Neighbour(workload_id, candidates[workload_id]) for workload_id in qualified),
            key=lambda neighbour: (neighbour.distance, neighbour.workload_id),
        )
        kth = found[limit - 1].distance if len(found) >= limit else math.inf
        # How far from ``size`` the rows read so far reach; an exhausted side reaches forever.
        reach_above = above[-1].size_log2 - size if len(above) == window else math.inf
        reach_below = size - below[-1].size_log2 if len(below) == window else math.inf
        if max_size_gap(signature, kth) <= min(reach_above, reach_below) or window >= MAX_WINDOW:
            return found[:limit]
        window *= 4
