"""/v1/models: upload an ONNX model, list them, see one with its coverage for a target."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from tunefarm.api.dependencies import CurrentTeam, EngineDep, SettingsDep
from tunefarm.api.schemas import ModelDetail, ModelList, ModelOut
from tunefarm.api.services import models
from tunefarm.api.uploads import MULTIPART_BODY, receive_upload

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    openapi_extra=MULTIPART_BODY,
    responses={200: {"model": ModelOut, "description": "The same bytes were uploaded before"}},
)
async def upload_model(
    request: Request,
    response: Response,
    team: CurrentTeam,
    settings: SettingsDep,
    engine: EngineDep,
) -> ModelOut:
    """Upload an ONNX model (multipart field ``file``); the same bytes give the same model."""
    upload = await receive_upload(request, settings)
    try:
        model, created = await run_in_threadpool(models.store_model, engine, settings, team, upload)
    finally:
        models.discard_upload(upload.path)
    if not created:
        response.status_code = 200
    return model


@router.get("", response_model=ModelList)
def list_models(
    team: CurrentTeam,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ModelList:
    return models.list_models(engine, team, limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelDetail)
def get_model(
    model_id: str,
    team: CurrentTeam,
    engine: EngineDep,
    settings: SettingsDep,
    target: Annotated[
        str | None,
        Query(max_length=2000, description="Report the database's coverage for this target."),
    ] = None,
    layout: Literal["auto", "NCHW", "NHWC"] = "auto",
    fp16: bool = False,
) -> ModelDetail:
    """The model's operators, inputs and outputs; with ``target``, how much is tuned already."""
    return models.get_model(
        engine, settings, team, model_id, target=target, layout=layout, fp16=fp16
    )
