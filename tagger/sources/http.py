"""``https://`` (and ``http://`` when allowed) photos, downloaded without becoming a proxy into
the worker's own network.

DNS rebinding. Checking a name and then letting the HTTP library resolve it again would allow a
second, different answer. Instead the connection is opened to the very IP literal that
:func:`~tagger.sources.urlsafety.resolve` checked: urllib3 gets a pool keyed by that IP, TLS
still uses the original name for SNI and certificate verification (urllib3's
``server_hostname``, verified by the ``ssl`` module), and the ``Host`` header carries the
original name. This uses only urllib3's public API (no patched sockets or private methods), and
urllib3 ignores ``*_proxy`` variables, so no proxy re-resolves the name either. Every redirect
hop is checked again the same way.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, SSLError

from tagger.config import Settings
from tagger.errors import AccessDenied, FetchFailed, NotFound, PermanentError, RefusedReference
from tagger.schemas import PhotoRef
from tagger.sources import urlsafety
from tagger.sources.base import Fetched, clean_etag
from tagger.sources.body import read_bounded
from tagger.sources.urlsafety import Target, redact_url

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = MappingProxyType(
    {
        "User-Agent": "tagger (image auto-tagging)",
        "Accept": "image/*, */*;q=0.5",
        # Compressed bodies would be inflated past the byte count the server announced.
        "Accept-Encoding": "identity",
    }
)


class HttpSource:
    """Downloads over one urllib3 pool manager (thread-safe), shared by http and https."""

    def __init__(self, settings: Settings) -> None:
        self._rules = settings.fetch
        self._limit = settings.image.max_bytes
        self._http = urllib3.PoolManager(
            num_pools=max(16, 2 * settings.fetch.io_threads),
            maxsize=settings.fetch.io_threads,
        )

    def fetch(self, ref: PhotoRef) -> Fetched:
        rules = self._rules
        deadline = time.monotonic() + rules.total_timeout
        url = ref.uri
        for hop in range(rules.max_redirects + 1):
            where = redact_url(url) if hop == 0 else f"{redact_url(ref.uri)} → {redact_url(url)}"
            # Through the module, not imported names: a test can then stand in for the policy.
            target = urlsafety.check_url(url, where, rules)
            response = self._open(target, where, deadline)
            complete = False
            try:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise PermanentError(f"{where}: HTTP {response.status} without Location")
                    url = urljoin(url, location)
                    continue
                _check_status(response.status, where)
                data = self._read(response, where, deadline)
                complete = True
                return Fetched(
                    ref=ref.uri, data=data, etag=clean_etag(response.headers.get("ETag"))
                )
            finally:
                if not complete:
                    response.close()  # never drain: the rest of the body may be endless
                response.release_conn()
        raise RefusedReference(
            f"{redact_url(ref.uri)}: more than {rules.max_redirects} redirects (last to "
            f"{redact_url(url)})"
        )

    def head(self, ref: PhotoRef) -> str | None:
        """None: a HEAD request costs a round trip and many servers give no stable ETag, so
        the version of a URL is known from its content."""
        return None

    def close(self) -> None:
        self._http.clear()

    def _open(self, target: Target, where: str, deadline: float) -> BaseHTTPResponse:
        rules = self._rules
        headers = {**_HEADERS, "Host": target.host_header}
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            pool_kwargs["server_hostname"] = target.host
        failure: BaseException | None = None
        for address in urlsafety.resolve(target, where, rules):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchFailed(f"{where}: no connection within the total timeout")
            pool = self._http.connection_from_host(
                f"[{address}]" if ":" in address else address,
                target.port,
                target.scheme,
                pool_kwargs=pool_kwargs,
            )
            timeout = urllib3.Timeout(
                connect=min(rules.connect_timeout, remaining),
                read=min(rules.read_timeout, remaining),
            )
            try:
                return pool.urlopen(
                    "GET",
                    target.request_uri,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    timeout=timeout,
                    preload_content=False,
                    assert_same_host=False,
                )
            except ConnectTimeoutError as exc:  # includes refused: try the next address
                failure = exc
            except SSLError:
                raise FetchFailed(f"{where}: TLS failed (certificate or handshake)") from None
            except HTTPError as exc:
                raise FetchFailed(f"{where}: {_describe(exc)}") from None
        raise FetchFailed(f"{where}: could not connect ({_describe(failure)})")

    def _read(self, response: BaseHTTPResponse, where: str, deadline: float) -> bytes:
        """The body, counted as it arrives; ``read1`` returns whatever is there, so the deadline
        is checked even when a server trickles a byte at a time."""
        header = response.headers.get("Content-Length")
        declared = int(header) if header is not None and header.strip().isdigit() else None
        try:
            return read_bounded(response.read1, declared, where, self._limit, deadline)
        except (HTTPError, OSError) as exc:
            raise FetchFailed(f"{where}: reading the body failed ({_describe(exc)})") from None


def _check_status(status: int, where: str) -> None:
    if 200 <= status < 300:
        return
    reason = f"{where}: HTTP {status}"
    if status in (404, 410):
        raise NotFound(reason)
    if status in (401, 403):
        raise AccessDenied(reason)
    if status in (408, 425, 429) or status >= 500:
        raise FetchFailed(reason)
    raise PermanentError(reason)


def _describe(exc: BaseException | None) -> str:
    """A short cause without the library's message, which may quote the full URL."""
    if exc is None:
        return "no address to connect to"
    if isinstance(exc, ConnectTimeoutError) and "timed out" not in str(exc):
        for arg in exc.args:
            if isinstance(arg, str) and ": " in arg:
                return arg.rsplit(": ", 1)[-1]  # e.g. "[Errno 111] Connection refused"
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timed out"
    return type(exc).__name__
