"""The gallery: plain HTML pages and one small script over the ``/v1`` API, served by the same
process so ``tagger serve`` after ``tagger tag ~/Pictures`` needs nothing else (no Node build,
no CDN: the pages load nothing from outside the server).

The pages are static; the script reads the API with the browser's own credentials (the
sign-in cookie of :mod:`tagger.api.auth`), so the gallery can do exactly what its token may.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tagger.api.auth import COOKIE, find_token
from tagger.config import ApiSettings

router = APIRouter(include_in_schema=False)

_STATIC = files("tagger.api") / "static"


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")


def _page(name: str) -> FileResponse:
    return FileResponse(str(_STATIC / name), media_type="text/html")


@router.get("/")
def index() -> FileResponse:
    return _page("index.html")


@router.get("/photo")
def photo_page() -> FileResponse:
    return _page("photo.html")


@router.get("/signin")
def signin_page() -> FileResponse:
    return _page("signin.html")


@router.post("/signin")
def signin(request: Request, token: Annotated[str, Form()]) -> Response:
    """Keep a valid token in an HttpOnly cookie for the gallery's reads; a wrong one goes
    back to the form."""
    settings: ApiSettings = request.app.state.settings.api
    if settings.tokens and find_token(settings, token) is None:
        return RedirectResponse("/signin?failed=1", status_code=303)
    answer = RedirectResponse("/", status_code=303)
    answer.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=7 * 24 * 3600,
    )
    return answer
