"""Builds the ``tagger serve`` application: the ``/v1`` API, health probes, the gallery and
the error answers every route shares.

One :class:`~tagger.client.TaggerClient` (broker connection, store engine) and one thumbnail
store are made per process at startup and kept on ``app.state``, never in a module global, so
tests can build as many apps as they like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagger import metrics
from tagger.api import gallery, routes
from tagger.api.auth import AuthError
from tagger.api.cursors import BadCursor
from tagger.api.models import ApiError, Readiness
from tagger.client import InvalidReference, TaggerClient
from tagger.config import Settings
from tagger.errors import ErrorCode, StoreUnavailable
from tagger.search import NothingToSearch
from tagger.thumbnails import ThumbnailStoreError, thumbnail_store

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, client: TaggerClient | None = None) -> FastAPI:
    """The application; ``client`` lets a caller share one it already has."""
    chosen = settings or (client.settings if client is not None else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = client is None
        app.state.client = client or TaggerClient(chosen)
        app.state.thumbnails = thumbnail_store(chosen)
        app.state.facets = {}  # limit -> (when counted, facets); see routes.facets
        try:
            yield
        finally:
            if owned:
                app.state.client.close()

    app = FastAPI(
        title="tagger",
        summary="Tags read from the pixels: submit photos, read their tags, search them.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = chosen
    app.include_router(routes.router)
    app.include_router(gallery.router)
    gallery.mount_static(app)
    _health(app)
    _errors(app)
    _measured(app)
    app.add_middleware(BodyLimit, max_bytes=chosen.api.max_body_bytes)
    return app


def _measured(app: FastAPI) -> None:
    """Requests by route template, method and status, and their latency, at ``/metrics``
    (open like the probes: it holds counts, never a photo or a ref)."""
    app.mount("/metrics", metrics.asgi_app())

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if template != "/metrics":
            seconds = time.perf_counter() - started
            metrics.observe_api_request(template, request.method, response.status_code, seconds)
        return response


def _health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """The process answers; says nothing of its dependencies (that is /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["probes"])
    def readyz(request: Request) -> JSONResponse:
        """Broker and store reachable: 200, else 503 naming what is not."""
        client: TaggerClient = request.app.state.client
        broker = "ok" if routes.broker_reachable(client) else "unreachable"
        try:
            client.store.ping()
            store = "ok"
        except StoreUnavailable as exc:
            store = exc.reason
        ready = broker == "ok" and store == "ok"
        body = Readiness(ready=ready, broker=broker, store=store)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _answer(status: int, code: ErrorCode, message: str, ref: str | None = None) -> JSONResponse:
    body = ApiError(code=code, message=message, ref=ref)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    """Every error is an :class:`ApiError` with a code from the one enum."""

    @app.exception_handler(AuthError)
    async def auth(_: Request, exc: AuthError) -> JSONResponse:
        status = 403 if exc.code is ErrorCode.FORBIDDEN else 401
        return _answer(status, exc.code, exc.message)

    @app.exception_handler(InvalidReference)
    async def invalid_ref(_: Request, exc: InvalidReference) -> JSONResponse:
        return _answer(422, ErrorCode.INVALID_REF, str(exc), exc.ref)

    @app.exception_handler(PermissionError)
    async def refused(_: Request, exc: PermissionError) -> JSONResponse:
        return _answer(422, ErrorCode.REFUSED, str(exc))

    @app.exception_handler(routes.NotFound)
    async def not_found(_: Request, exc: routes.NotFound) -> JSONResponse:
        return _answer(404, ErrorCode.NOT_FOUND, exc.message, exc.ref)

    @app.exception_handler(routes.BrokerUnavailable)
    async def broker(_: Request, __: routes.BrokerUnavailable) -> JSONResponse:
        return _answer(503, ErrorCode.BROKER_UNAVAILABLE, "broker unreachable; nothing enqueued")

    @app.exception_handler(StoreUnavailable)
    async def store(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return _answer(503, ErrorCode.STORE_UNAVAILABLE, exc.reason)

    @app.exception_handler(ThumbnailStoreError)
    async def thumbnails(_: Request, __: ThumbnailStoreError) -> JSONResponse:
        return _answer(503, ErrorCode.TRANSIENT, "thumbnail storage unreachable; try again")

    @app.exception_handler(BadCursor)
    async def cursor(_: Request, exc: BadCursor) -> JSONResponse:
        return _answer(422, ErrorCode.INVALID_REQUEST, f"cursor: {exc}")

    @app.exception_handler(NothingToSearch)
    async def nothing(_: Request, exc: NothingToSearch) -> JSONResponse:
        return _answer(422, ErrorCode.INVALID_REQUEST, str(exc))

    @app.exception_handler(ValueError)
    async def value(_: Request, exc: ValueError) -> JSONResponse:
        return _answer(422, ErrorCode.INVALID_REQUEST, _first_line(exc))

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(422, ErrorCode.INVALID_REQUEST, _validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {
            401: ErrorCode.UNAUTHORIZED,
            403: ErrorCode.FORBIDDEN,
            404: ErrorCode.NOT_FOUND,
            413: ErrorCode.TOO_LARGE,
        }.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        return _answer(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed", extra={"path": request.url.path})
        return _answer(500, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _validation_message(errors: Any) -> str:
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg"))
    return "; ".join(str(p) for p in parts) or "invalid request"


class BodyLimit:
    """413 for a request body over ``max_bytes``, whether it declares its length or streams
    it in chunks, before any route reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            # Past the limit the app is told the client left, so it stops reading; the 413
            # is sent here, never the app's own answer to a half-read body.
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _too_large(self.max_bytes)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return _answer(413, ErrorCode.TOO_LARGE, f"request body over {limit} bytes")
