"""The FastAPI app: ``create_app(scorer, settings)`` serves one loaded :class:`~dgiqa_cli.inference.scorer.Scorer`.

Routes: ``POST /v1/score`` (a raw picture, or multipart ``file`` parts),
``POST /v1/explain`` (the explain panel as PNG, or its JSON report),
``GET /v1/model``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``,
``GET /docs`` and the page at ``GET /``. A result object is the batch row
(:func:`dgiqa_cli.io.rows.row_of`) with ``path`` called ``name``: uploaded names
are text, never paths, and no URL is ever fetched for a client. Every error
answers ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from importlib import resources

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dgiqa_cli.inference.scorer import Scorer, ScoreResult
from dgiqa_cli.io.images import ImageError, decode_image
from dgiqa_cli.io.rows import row_of
from dgiqa_cli.io.sources import Item
from dgiqa_cli.serving.batching import Batcher, QueueFull
from dgiqa_cli.serving.limits import key_matches
from dgiqa_cli.serving.monitoring import ServerMetrics
from dgiqa_cli.serving.settings import ServeSettings
from dgiqa_cli.version import __version__

log = logging.getLogger("dgiqa")

RAW_TYPES = ("image/", "application/octet-stream")
MAX_PARTS = 256  # file parts of one multipart request
# The page loads nothing from elsewhere: scripts, styles, pictures and requests stay on this server.
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"
PAGE_FILES = {"/page/app.js": "text/javascript", "/page/style.css": "text/css"}


def create_app(scorer: Scorer, settings: ServeSettings | None = None, batcher: Batcher | None = None) -> FastAPI:
    """The scoring service of ``scorer``; ``batcher``: how pictures are batched (default: :class:`Batcher`)."""
    settings = settings or ServeSettings()
    batcher = batcher or Batcher(scorer, settings)
    metrics = ServerMetrics(queue_depth=lambda: batcher.in_flight)
    batcher.on_batch = metrics.batch_size.observe
    ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        warm_up = asyncio.create_task(_warm_up(batcher, ready))
        yield
        warm_up.cancel()
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = FastAPI(
        title="dgiqa",
        version=__version__,
        summary="Blind image quality scores (DGIQA, Life-IQA) over HTTP",
        lifespan=lifespan,
        max_body_size=settings.max_upload_bytes,  # counted as the body arrives: 413 beyond it
    )
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    def authorized(request: Request) -> None:
        if settings.api_key and not key_matches(request.headers.get("authorization"), settings.api_key):
            raise HTTPException(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    guarded = [Depends(authorized)]
    too_large = f"upload too large (the limit is {settings.max_upload_mb:g} MB: --max-upload-mb)"

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = too_large if exc.status_code == 413 else str(exc.detail)
        metrics.failure(detail)
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        metrics.failure("client disconnected")  # nobody to answer (or uvicorn already did: 400)
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    def result_fields(result: ScoreResult) -> dict:
        """The batch row of ``result`` with ``name`` first (the upload's name, as text)."""
        row = row_of(result, scorer.settings)
        return {"name": row.pop("path"), **row}

    async def score_one(data: bytes, name: str) -> ScoreResult:
        try:
            result = await asyncio.wait_for(batcher.score(data, name), settings.timeout)
        except QueueFull as exc:
            raise HTTPException(503, f"busy: {exc}; retry later", headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:  # (not yet the built-in TimeoutError on Python 3.10)
            raise HTTPException(504, f"not scored within {settings.timeout:g} s (--timeout)") from None
        metrics.picture(result.error)
        return result

    @app.post("/v1/score", dependencies=guarded, summary="Score a picture (raw body) or several (multipart)")
    async def score(request: Request, name: str = "upload"):
        """Send the picture as the body (``Content-Type: image/*`` or ``application/octet-stream``, ``?name=``
        optional) for one result (422 with ``error`` when it cannot be scored), or ``multipart/form-data`` with
        ``file`` parts for ``{"results": [...]}`` in order, failed parts carrying ``error``."""
        if _content_type(request).startswith("multipart/form-data"):
            uploads = await _file_parts(request)
            results = await asyncio.gather(*(score_one(data, part) for part, data in uploads))
            return {"results": [result_fields(r) for r in results]}
        data = await _raw_body(request)
        result = await score_one(data, name)
        return JSONResponse(result_fields(result), status_code=200 if result.ok else 422)

    @app.post("/v1/explain", dependencies=guarded, summary="The explain panel (PNG), or its report (JSON)")
    async def explain(request: Request, name: str = "upload", quality: bool = True, stride: int = 32):
        """Depth, attention and quality maps of one picture (the body, as for ``/v1/score``): the panel as PNG,
        or the JSON report with ``Accept: application/json``. ``quality=false`` skips the slow quality map."""
        from dgiqa_cli.explain.explanation import explain_prepared
        from dgiqa_cli.explain.panel import panel

        if _content_type(request).startswith("multipart/form-data"):
            name, data = (await _file_parts(request))[0]
        else:
            data = await _raw_body(request)

        def work():
            image = decode_image(data, name, scorer.max_pixels)
            explanation = explain_prepared(scorer, scorer.prepare(image), quality=quality, stride=stride)
            if "application/json" in request.headers.get("accept", ""):
                return explanation.report()
            png = io.BytesIO()
            panel(explanation).save(png, format="PNG")
            return png.getvalue()

        try:
            answer = await asyncio.wait_for(batcher.run_exclusive(work), settings.timeout)
        except QueueFull as exc:
            raise HTTPException(503, f"busy: {exc}; retry later", headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not explained within {settings.timeout:g} s (--timeout)") from None
        except ImageError as exc:
            metrics.failure(exc.reason)
            return JSONResponse({"name": name, "error": exc.reason}, status_code=422)
        except ValueError as exc:  # a bad option (stride)
            raise HTTPException(422, str(exc)) from None
        if isinstance(answer, dict):
            return JSONResponse({"name": name, **answer})
        return Response(answer, media_type="image/png")

    @app.get("/v1/model", dependencies=guarded, summary="The model, its score range and the settings")
    async def model():
        low, high = scorer.score_range
        return {
            "weights": scorer.model_name,
            "weights_sha256": scorer.weights.sha256,
            "family": scorer.arch,
            "depth_model": scorer.depth_model_name,
            "score_range": [low, high],
            "scale": scorer.scale,
            "lower_better": not scorer.card.config.get("higher_is_better", True),
            "settings": scorer.settings,
            "device": str(scorer.device),
            "max_batch": batcher.max_batch,
            "max_upload_mb": settings.max_upload_mb,
            "version": __version__,
        }

    @app.get("/healthz", summary="Alive")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz", summary="Ready: the model is loaded and a warm-up picture was scored")
    async def readyz():
        if ready.is_set():
            return {"status": "ready"}
        return JSONResponse({"status": "warming up"}, status_code=503)

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        html = resources.files(__package__).joinpath("page/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY})

    for path, media_type in PAGE_FILES.items():
        app.add_api_route(path, _page_file(path, media_type), methods=["GET"], include_in_schema=False)

    app.add_middleware(RequestMetrics, metrics=metrics, routes={r.path for r in app.routes})
    return app


def _page_file(path: str, media_type: str):
    async def serve_file():
        text = resources.files(__package__).joinpath(path.lstrip("/")).read_text(encoding="utf-8")
        return Response(text, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return serve_file


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").lower()


async def _raw_body(request: Request) -> bytes:
    content_type = _content_type(request)
    if content_type and not content_type.startswith(RAW_TYPES):
        raise HTTPException(415, f"unsupported Content-Type {content_type!r}: send image/*, "
                                 "application/octet-stream or multipart/form-data")  # fmt: skip
    return await request.body()


async def _file_parts(request: Request) -> list[tuple[str, bytes]]:
    """The ``file`` parts of a multipart body as (name, bytes), in order; their names stay text."""
    async with request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS) as form:
        parts = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
        if not parts:
            raise HTTPException(422, "no 'file' part in the multipart body")
        return [(part.filename or f"part {i + 1}", await part.read()) for i, part in enumerate(parts)]


async def _warm_up(batcher: Batcher, ready: asyncio.Event) -> None:
    """Score one small synthetic picture, so that the first client does not pay for the first pass.

    Straight through the networks, not the queue: it must not wait for a batch to fill, nor join one."""
    y, x = np.mgrid[0:256, 0:256]
    picture = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    item = Item("warm-up", data=cv2.imencode(".png", picture)[1].tobytes())

    def warm() -> ScoreResult:
        prepared = batcher.runner.prepare(item)
        return prepared if isinstance(prepared, ScoreResult) else batcher.score_now([prepared])[0]

    result = await asyncio.get_running_loop().run_in_executor(batcher.prepare_pool, warm)
    if result.ok:
        ready.set()
    else:
        log.error("the warm-up picture could not be scored: %s", result.error)


class RequestMetrics:
    """ASGI middleware: every request counted by route and status, and timed."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
