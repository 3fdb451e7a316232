"""Bearer tokens with scopes, from :class:`~tagger.config.ApiSettings`.

A request authenticates with ``Authorization: Bearer <token>``. The gallery's pages cannot
set that header on ``<img>`` requests, so its sign-in stores the token in an HttpOnly,
SameSite=Strict cookie, which is accepted for reading only: a cross-site form can never make
a browser submit work with it.

With no token configured the server is a laptop's own gallery: ``tagger serve`` then refuses
to bind to anything but loopback, and every request may read and submit.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tagger.config import ApiScope, ApiSettings, ApiToken
from tagger.errors import ErrorCode

COOKIE = "tagger_token"

_bearer = HTTPBearer(auto_error=False, description="a token from TAGGER_API__TOKENS")


class AuthError(Exception):
    """Answered as 401 (no or unknown token) or 403 (a token without the scope)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def find_token(settings: ApiSettings, presented: str) -> ApiToken | None:
    """The configured token equal to ``presented``, compared in constant time."""
    found = None
    for token in settings.tokens:
        if hmac.compare_digest(token.token.get_secret_value().encode(), presented.encode()):
            found = token
    return found


def _presented(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None:
        return credentials.credentials
    if request.method in ("GET", "HEAD"):
        return request.cookies.get(COOKIE)
    return None


def require(scope: ApiScope) -> Any:
    """A dependency that lets the request through when its token has ``scope`` (typed
    ``Any`` as FastAPI's own ``Depends`` is)."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        settings: ApiSettings = request.app.state.settings.api
        if not settings.tokens:
            return "anonymous"
        presented = _presented(request, credentials)
        if not presented:
            raise AuthError(ErrorCode.UNAUTHORIZED, "a bearer token is required")
        token = find_token(settings, presented)
        if token is None:
            raise AuthError(ErrorCode.UNAUTHORIZED, "unknown token")
        if scope not in token.scopes:
            raise AuthError(ErrorCode.FORBIDDEN, f"token {token.name!r} lacks the {scope!r} scope")
        return token.name

    return Depends(check)
