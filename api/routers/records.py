"""/v1/records: query the tuning database, export and import MetaSchedule JSON, promote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tunefarm.api.dependencies import CurrentTeam, EngineDep
from tunefarm.api.schemas import (
    ImportResult,
    PromoteRequest,
    PromoteResult,
    RecordList,
    RecordsDocument,
)
from tunefarm.api.services import records

router = APIRouter(prefix="/v1/records", tags=["records"])

TargetQuery = Annotated[
    str | None, Query(max_length=2000, description="llvm, cuda -arch=sm_90, or TVM target JSON")
]


@router.get("", response_model=RecordList)
def query_records(
    team: CurrentTeam,
    engine: EngineDep,
    workload_key: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    operator: Annotated[
        str | None,
        Query(pattern="^[A-Za-z0-9_.]{1,100}$", description="a block name or part of it: conv2d"),
    ] = None,
    target: TargetQuery = None,
    top_k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> RecordList:
    """The best records the team may see: its own, the organisation's, and promoted ones."""
    return records.query(
        engine, team, workload_key=workload_key, operator=operator, target=target, top_k=top_k
    )


@router.get("/export", response_model=RecordsDocument)
def export_records(
    team: CurrentTeam, engine: EngineDep, target: TargetQuery = None
) -> RecordsDocument:
    """Verified records in MetaSchedule's JSON layout: one list item per line of its files."""
    return records.export(engine, team, target=target)


@router.post("/import", response_model=ImportResult)
def import_records(team: CurrentTeam, engine: EngineDep, body: RecordsDocument) -> ImportResult:
    """Import MetaSchedule JSON. The records stay unverified until a worker measures them."""
    return records.import_records(engine, team, body)


@router.post("/promote", response_model=PromoteResult)
def promote_records(team: CurrentTeam, engine: EngineDep, body: PromoteRequest) -> PromoteResult:
    """Share the team's records with the whole organisation."""
    return PromoteResult(promoted=records.promote(engine, team, body.record_ids))
