"""The ``/v1`` routes: each one validates its input, calls :class:`~tagger.client.TaggerClient`
or the store, and returns the library's own models. No tagging logic lives here."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from PIL import Image, ImageFilter

from tagger.api.auth import require
from tagger.api.cursors import (
    keyset_cursor,
    offset_cursor,
    query_fingerprint,
    read_keyset,
    read_offset,
)
from tagger.api.models import (
    ApiError,
    CardPage,
    HitPage,
    JobCreated,
    JobRequest,
    JobStatus,
    RecommendRequest,
    ResultPage,
    TextHitPage,
)
from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.schemas import PhotoRef, TagResult
from tagger.search import Recommendation
from tagger.store import Facets, Keyset, SearchFilters, SearchHit
from tagger.thumbnails import ThumbnailStore

router = APIRouter(prefix="/v1")

READ = require("read")
SUBMIT = require("submit")

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ApiError, "description": "no token or an unknown one"},
    403: {"model": ApiError, "description": "the token lacks the scope"},
    422: {"model": ApiError, "description": "invalid request or reference"},
}

Limit = Annotated[int, Query(ge=1, description="items per page (at most TAGGER_API__MAX_PAGE)")]
Cursor = Annotated[str | None, Query(description="`next` of the previous page")]
Tags = Annotated[list[str], Query(description="hits have every one of these tags")]
Colours = Annotated[list[str], Query(description="hits' subject has every one of these colours")]


class NotFound(Exception):
    """Answered as 404 with the code ``not_found``."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref


class BrokerUnavailable(Exception):
    """Answered as 503: nothing was enqueued, the caller should try again."""


def _client(request: Request) -> TaggerClient:
    client: TaggerClient = request.app.state.client
    return client


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _page_size(request: Request, limit: int) -> int:
    return min(limit, _settings(request).api.max_page)


def _identity(ref: str) -> str:
    return PhotoRef.parse(ref).identity


def _filters(
    tag: Tags = [],  # noqa: B006 - FastAPI reads the default, never mutates it
    colour: Colours = [],  # noqa: B006
    min_people: Annotated[int | None, Query(ge=0)] = None,
    max_people: Annotated[int | None, Query(ge=0)] = None,
) -> SearchFilters:
    """The filter query parameters every listing and search shares, as the store's model."""
    return SearchFilters(
        tags=tuple(tag), colours=tuple(colour), min_people=min_people, max_people=max_people
    )


Filters = Annotated[SearchFilters, Depends(_filters)]
Safe = Annotated[bool, Query(description="leave out flagged photos and photos not scored")]


def _ranked_window(request: Request, limit: int, cursor: str | None, query: str) -> tuple[int, int]:
    """The offset this page starts at and how many hits to ask for (one more than shown, to
    know whether a next page exists), within the depth a client may page to."""
    offset = read_offset(cursor, query)
    size = _page_size(request, limit)
    depth = _settings(request).api.max_depth
    if offset >= depth:
        return offset, 0
    return offset, min(offset + size + 1, depth + 1)


def _hit_page(hits: list[SearchHit], offset: int, size: int, query: str) -> HitPage:
    shown = hits[offset : offset + size]
    more = len(hits) > offset + size
    return HitPage(items=shown, next=offset_cursor(offset + size, query) if more else None)


# -- jobs ---------------------------------------------------------------------------------


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobCreated,
    responses={**_ERRORS, 503: {"model": ApiError, "description": "broker unreachable"}},
    dependencies=[SUBMIT],
)
def submit(request: Request, body: JobRequest) -> JobCreated:
    """Enqueue photos for tagging; follow them with ``GET /v1/jobs/{id}``."""
    client = _client(request)
    settings = _settings(request)
    if len(body.refs) > settings.api.max_refs:
        raise ValueError(
            f"{len(body.refs)} refs in one job; at most {settings.api.max_refs} "
            "(TAGGER_API__MAX_REFS)"
        )
    photos = client.validate(body.refs)
    if not settings.fetch.allow_local_paths:
        local = next((ref for ref in photos if ref.kind == "file"), None)
        if local is not None:
            raise PermissionError(
                f"{local.identity}: workers do not read local paths "
                "(TAGGER_FETCH__ALLOW_LOCAL_PATHS); use tagger tag for a folder"
            )
    if not broker_reachable(client):
        raise BrokerUnavailable()
    job = client.submit(photos, force=body.force)
    return JobCreated(id=job.id, total=job.total)


def broker_reachable(client: TaggerClient, timeout: float = 2.0) -> bool:
    """One quick connection attempt, so a submit during a broker outage is answered with 503
    at once rather than after the publisher's own retries (minutes)."""
    try:
        with client.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception:  # any failure to connect means not reachable, whatever the transport
        return False
    return True


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=_ERRORS, dependencies=[READ])
def job_status(request: Request, job_id: str) -> JobStatus:
    counts = _client(request).job(job_id).status()
    if counts.total == 0:
        raise NotFound(f"no job {job_id}")
    return JobStatus(id=job_id, counts=counts)


# -- photos -------------------------------------------------------------------------------


@router.get("/photos", response_model=TagResult, responses=_ERRORS, dependencies=[READ])
def photo(
    request: Request,
    ref: Annotated[str, Query(description="the photo's reference, as submitted")],
) -> TagResult:
    """The photo's TagResult: status, tags with parents, objects, colours, safety (the
    signature vector is never serialised; similar and recommend use it)."""
    result = _client(request).tags(ref)
    if result is None:
        raise NotFound("photo not tagged (yet)", ref=_identity(ref))
    return result


@router.get("/photos/recent", response_model=CardPage, responses=_ERRORS, dependencies=[READ])
def recent(
    request: Request,
    filters: Filters,
    safe: Safe = False,
    limit: Limit = 48,
    cursor: Cursor = None,
) -> CardPage:
    """Tagged photos, most recently tagged first: the gallery's front page."""
    client = _client(request)
    chosen = client.safe_filters(filters, safe)
    page = client.store.recent(_page_size(request, limit), chosen, read_keyset(cursor))
    return CardPage(items=page.cards, next=keyset_cursor(page.next))


@router.get(
    "/photos/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}, **_ERRORS},
    dependencies=[READ],
)
def thumbnail(
    request: Request,
    ref: str,
    show: Annotated[bool, Query(description="do not blur a flagged photo")] = False,
) -> Response:
    """The small WebP the worker made; a photo the safety analyser flagged comes blurred
    unless ``show`` is set, so a gallery never shows it by accident."""
    identity = _identity(ref)
    thumbnails: ThumbnailStore | None = request.app.state.thumbnails
    data = thumbnails.get(identity) if thumbnails is not None else None
    if data is None:
        raise NotFound("no thumbnail for this photo", ref=identity)
    client = _client(request)
    if not show:
        result = client.store.get(identity)
        score = result.nsfw if result is not None else None
        if score is None or score >= client.settings.safety.threshold:
            data = _blurred(data)
    return Response(
        data, media_type="image/webp", headers={"Cache-Control": "private, max-age=300"}
    )


def _blurred(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        radius = max(image.size) / 12
        out = io.BytesIO()
        image.convert("RGB").filter(ImageFilter.GaussianBlur(radius)).save(out, "WEBP")
    return out.getvalue()


# -- reading ------------------------------------------------------------------------------


@router.get("/search", response_model=TextHitPage, responses=_ERRORS, dependencies=[READ])
def search(
    request: Request,
    filters: Filters,
    q: Annotated[str | None, Query(description='free text: "a blue car by the beach"')] = None,
    safe: Safe = False,
    limit: Limit = 48,
    cursor: Cursor = None,
) -> TextHitPage:
    """Photos matching a text query and/or tags and colours, best first; ``unknown`` names
    the words no tag matches."""
    client = _client(request)
    query = query_fingerprint("search", q, filters.model_dump(), safe)
    offset, wanted = _ranked_window(request, limit, cursor, query)
    size = _page_size(request, limit)
    if q is not None and q.strip():
        found = client.search_text(q, max(wanted, 1), filters=filters, safe=safe)
        hits = found.hits if wanted else []
        page = _hit_page(hits, offset, size, query)
        return TextHitPage(
            items=page.items,
            next=page.next,
            tags=found.tags,
            colours=found.colours,
            people=found.people,
            unknown=found.unknown,
        )
    if not filters.required():
        raise ValueError("give a text query (q) or at least one tag or colour")
    hits = client.search([], max(wanted, 1), filters=filters, safe=safe) if wanted else []
    page = _hit_page(hits, offset, size, query)
    return TextHitPage(
        items=page.items, next=page.next, tags=list(filters.tags), colours=list(filters.colours)
    )


@router.get("/similar", response_model=HitPage, responses=_ERRORS, dependencies=[READ])
def similar(
    request: Request,
    ref: str,
    safe: bool = False,
    limit: Limit = 24,
    cursor: Cursor = None,
) -> HitPage:
    """Photos most like ``ref``, best first."""
    client = _client(request)
    identity = _identity(ref)
    if client.store.get(identity) is None:
        raise NotFound("photo not tagged (yet)", ref=identity)
    query = query_fingerprint("similar", identity, safe)
    offset, wanted = _ranked_window(request, limit, cursor, query)
    hits = client.similar(identity, wanted, safe=safe) if wanted else []
    return _hit_page(hits, offset, _page_size(request, limit), query)


@router.post("/recommend", response_model=Recommendation, responses=_ERRORS, dependencies=[READ])
def recommend(request: Request, body: RecommendRequest) -> Recommendation:
    """Photos for someone who liked ``liked``, diversified; ``missing`` names liked photos
    the store does not know."""
    return _client(request).recommend(
        body.liked,
        body.k,
        exclude=body.exclude,
        diversity=body.diversity,
        filters=body.filters,
        safe=body.safe,
    )


@router.get("/failures", response_model=ResultPage, responses=_ERRORS, dependencies=[READ])
def failures(request: Request, limit: Limit = 50, cursor: Cursor = None) -> ResultPage:
    """Failed photos, most recent first, each with its error code and reason."""
    size = _page_size(request, limit)
    rows = _client(request).store.failures(size + 1, after=read_keyset(cursor))
    return _result_page(rows, size, lambda r: Keyset(value=r.tagged_at.isoformat(), ref=r.ref))


@router.get("/flagged", response_model=ResultPage, responses=_ERRORS, dependencies=[READ])
def flagged(
    request: Request,
    threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ResultPage:
    """Photos the safety analyser flagged, most likely first."""
    client = _client(request)
    bound = client.settings.safety.threshold if threshold is None else threshold
    size = _page_size(request, limit)
    rows = client.store.flagged(bound, size + 1, after=read_keyset(cursor))
    return _result_page(rows, size, lambda r: Keyset(value=r.nsfw or 0.0, ref=r.ref))


def _result_page(
    rows: list[TagResult], size: int, key: Callable[[TagResult], Keyset]
) -> ResultPage:
    shown = rows[:size]
    more = len(rows) > size and shown
    return ResultPage(items=shown, next=keyset_cursor(key(shown[-1])) if more else None)


@router.get("/facets", response_model=Facets, responses=_ERRORS, dependencies=[READ])
def facets(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 30) -> Facets:
    """How the tagged photos divide by tag, colour, people and safety: the gallery's filters.
    Counting reads every tag row, so an answer is reused for ``TAGGER_API__FACETS_TTL``
    seconds: every gallery visit asks, and the counts of a large store move slowly."""
    client = _client(request)
    ttl = client.settings.api.facets_ttl
    cached: dict[int, tuple[float, Facets]] = request.app.state.facets
    now = time.monotonic()
    hit = cached.get(limit)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    counted = client.store.facets(limit, client.settings.safety.threshold)
    cached[limit] = (now, counted)
    return counted
