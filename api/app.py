"""The FastAPI app: ``create_app(settings)``; ``tunefarm serve`` runs it under uvicorn."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tunefarm.api.body_limit import BodyLimit
from tunefarm.api.dashboard_session import SignInRequired
from tunefarm.api.errors import install_error_handlers
from tunefarm.api.routers import dashboard, health, jobs, models, records
from tunefarm.api.services.coverage import close_model_analyses
from tunefarm.tuner.settings import Settings
from tunefarm.tuner.targets import parse_target
from tunefarm.tuning_db.sql_database import open_engine
from tunefarm.workers.celery_app import create_app as create_celery_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # TVM is imported once, up front (targets are parsed on many requests), and the heap
        # it leaves is frozen: Python's full collections would otherwise walk it again and
        # again, pausing requests for 100 ms and more.
        parse_target("llvm")
        gc.freeze()
        yield
        close_model_analyses()
        app.state.engine.dispose()

    app = FastAPI(
        title="tunefarm",
        version="1",
        summary="Tune and compile ONNX models with TVM on a farm of workers.",
        lifespan=lifespan,
        docs_url=None,  # served below from our own assets, not a CDN
    )
    _serve_docs_offline(app)
    app.state.settings = settings
    app.state.engine = open_engine(settings.resolved_database_url())
    # The API's own Celery app: its broker is the settings', not whatever was imported first.
    app.state.celery = create_celery_app(settings.broker_url)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(records.router)
    _serve_dashboard(app)

    def body_limit(method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") == "/v1/models":
            return settings.api_max_upload_bytes
        return settings.api_max_request_bytes

    app.add_middleware(BodyLimit, limit_for=body_limit)
    return app


DOCS_ASSETS = "/docs-assets"


def _serve_docs_offline(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the installed ``swagger-ui-bundle``: FastAPI's default
    loads it from a CDN, and a farm's network often reaches none (issue 19)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _serve_dashboard(app: FastAPI) -> None:
    """The web dashboard at ``/`` and its assets (uPlot is vendored: no CDN)."""
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=str(dashboard.STATIC_DIR)), name="static")
    app.include_router(dashboard.router)
    app.add_exception_handler(SignInRequired, dashboard.sign_in_redirect)  # type: ignore[arg-type]


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory tunefarm.api.app:app_from_environment``."""
    return create_app(Settings())
