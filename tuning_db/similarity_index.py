"""The similarity index: nearest workloads of the same operator family, by an indexed query.

Each workload has a row in ``workload_signatures`` (written with the workload). A lookup reads the
new workload's family in ``size_log2`` order on both sides of its own size, through the index on
``(family_key, size_log2)``, skipping in SQL the rows without records on the wanted targets (an
EXISTS probe of the records' index per row), a few dozen rows at a time, and computes the exact
distance of those rows in Python. It stops once no unread row can be nearer than the neighbours
found: a row at size gap g is at distance at least g / sqrt(rank) (see ``max_size_gap``). Past
``MAX_WINDOW`` qualified rows per side it answers with the nearest of the rows read: in a family
of hundreds of thousands of measured shapes, the neighbours are then the nearest among the
2 * ``MAX_WINDOW`` nearest in size, not necessarily the nearest of all.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select
from tvm.ir import IRModule

from tunefarm.tuning_db.operator_signature import (
    OperatorSignature,
    distance_in_family,
    max_size_gap,
    operator_signature,
)
from tunefarm.tuning_db.schema import Base, WorkloadSignatureRow

_signatures = Base.metadata.tables[WorkloadSignatureRow.__tablename__]

FIRST_WINDOW = 16
MAX_WINDOW = 128
"""Qualified rows per side at most. At a million signatures, 300,000 of one family and 1% of
them measured, a lookup took 0.43 s (SQLite) with 512 and 0.06 s with 128 on 2 cores
(``bench/similarity_index.py``), for neighbours slightly farther (median 1.24 against 1.04)."""


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


def window_statement(
    family_key: str,
    size_log2: float,
    limit: int,
    *,
    above: bool,
    qualify: ColumnElement[bool] | None = None,
) -> Select[Any]:
    """The ``limit`` rows of a family nearest in size above (or below) ``size_log2``.

    A range scan of ix_workload_signatures_family_size from ``size_log2`` outwards; rows that
    fail ``qualify`` (an EXISTS probe: has records on these targets) are skipped in the scan.
    """
    columns = (_signatures.c.workload_id, _signatures.c.size_log2, _signatures.c.signature_json)
    order: tuple[Any, ...]
    if above:
        where = _signatures.c.size_log2 >= size_log2
        order = (_signatures.c.size_log2, _signatures.c.workload_id)
    else:
        where = _signatures.c.size_log2 < size_log2
        order = (_signatures.c.size_log2.desc(), _signatures.c.workload_id)
    conditions = [_signatures.c.family_key == family_key, where]
    if qualify is not None:
        conditions.append(qualify)
    return select(*columns).where(*conditions).order_by(*order).limit(limit)


def nearest_workloads(
    connection: Connection,
    signature: OperatorSignature,
    *,
    limit: int,
    exclude: Iterable[int] = (),
    qualify: Callable[[ColumnElement[int]], ColumnElement[bool]] | None = None,
) -> list[Neighbour]:
    """The ``limit`` nearest workloads of the signature's family, nearest first.

    ``exclude``: workload ids never returned (the workload itself). ``qualify``: given the
    signature rows' workload id column, the condition a neighbour must meet (records on
    targets of the same kind, say); it runs in the scan, so only qualified rows reach Python.
    """
    if limit <= 0:
        return []
    family_key = signature.family_key
    size = signature.size_log2
    excluded = set(exclude)
    condition = qualify(_signatures.c.workload_id) if qualify is not None else None
    window = FIRST_WINDOW
    while True:
        sides = [
            connection.execute(
                window_statement(family_key, size, window, above=above, qualify=condition)
            ).all()
            for above in (True, False)
        ]
        found = []
        for row in [*sides[0], *sides[1]]:
            if row.workload_id in excluded:
                continue
            # The family is the query's (the index says so): compare the shapes only.
            stored = json.loads(row.signature_json)
            distance = distance_in_family(
                signature.shape, signature.strides, stored["shape"], stored["strides"]
            )
            if math.isfinite(distance):
                found.append(Neighbour(int(row.workload_id), distance))
        found.sort(key=lambda neighbour: (neighbour.distance, neighbour.workload_id))
        kth = found[limit - 1].distance if len(found) >= limit else math.inf
        # How far from ``size`` the scans reached; an exhausted side reaches forever.
        above, below = sides
        reach_above = above[-1].size_log2 - size if len(above) == window else math.inf
        reach_below = size - below[-1].size_log2 if len(below) == window else math.inf
        if max_size_gap(signature, kth) <= min(reach_above, reach_below) or window >= MAX_WINDOW:
            return found[:limit]
        window = min(window * 4, MAX_WINDOW)
