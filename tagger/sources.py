"""Read a photo's bytes from its reference, bounded in size and time, failing only with typed
errors whose reasons are safe to store.

Three kinds of reference share one contract: ``s3://bucket/key`` (boto3), ``https://`` (and
``http://`` when allowed) and local file paths. A worker fetches from many threads at once, so
the Fetcher holds exactly one boto3 client and one urllib3 pool manager, both thread-safe.

URL safety. A photo URL comes from whoever submits work, so a worker must not become a proxy
into its own network (SSRF). Every hop of a download, redirects included, is checked: the
scheme must be https (http only when allowed), the host is resolved once with
``socket.getaddrinfo`` and *every* address it resolves to must be globally routable unicast
(no loopback, private, link-local, shared, multicast, reserved or unspecified addresses, no
cloud metadata endpoint, no IPv4 address hidden in an IPv6 one).

DNS rebinding. Checking a name and then letting the HTTP library resolve it again would allow
a second, different answer. Instead the connection is opened to the very IP literal that was
checked: urllib3 gets a pool keyed by that IP, TLS still uses the original name for SNI and
certificate verification (urllib3's ``server_hostname``, verified by the ``ssl`` module), and
the ``Host`` header carries the original name. This uses only urllib3's public API (no patched
sockets or private methods), and urllib3 ignores ``*_proxy`` variables, so no proxy re-resolves
the name either. The resolver itself has no timeout of its own; the system's applies.
"""

from __future__ import annotations

import errno
import socket
import stat
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin, urlsplit, urlunsplit

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import ConnectTimeoutError, HTTPError, LocationParseError, SSLError
from urllib3.util import parse_url

from tagger.config import Settings
from tagger.errors import (
    AccessDenied,
    FetchFailed,
    ImageTooLarge,
    NotAnImage,
    NotFound,
    PermanentError,
    RefusedReference,
    TaggerError,
)
from tagger.schemas import PhotoRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from urllib3.response import BaseHTTPResponse

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443})
_HEADERS = MappingProxyType(
    {
        "User-Agent": "tagger (image auto-tagging)",
        "Accept": "image/*, */*;q=0.5",
        # Compressed bodies would be inflated past the byte count the server announced.
        "Accept-Encoding": "identity",
    }
)

# Named explicitly although the general rules below already cover them, so a change in those
# rules (or in Python's address tables) can never quietly open the metadata services.
_METADATA = frozenset(
    ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ip_network("64:ff9b::/96")

_S3_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"})
_S3_DENIED = frozenset(
    {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
     "SignatureDoesNotMatch", "AccountProblem", "InvalidObjectState"}
)  # fmt: skip
_S3_TRANSIENT = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
     "RequestLimitExceeded", "RequestTimeout", "InternalError", "ServiceUnavailable",
     "ExpiredToken", "RequestExpired", "RequestTimeTooSkewed", "500", "502", "503", "504"}
)  # fmt: skip


class Fetched(BaseModel):
    """A photo's raw bytes and the version marker its source gave them, if any."""

    model_config = ConfigDict(frozen=True)

    ref: str
    data: bytes = Field(repr=False)  # never dump megabytes into a log line
    etag: str | None = Field(
        default=None, description="S3 or HTTP ETag without quotes; None for files"
    )


class _Target(NamedTuple):
    """One hop of an HTTP download, parsed once so every part is used consistently."""

    scheme: str
    host: str  # for DNS and SNI: no brackets around IPv6
    port: int
    host_header: str
    request_uri: str


def redact_url(url: str) -> str:
    """The URL without credentials: no user info, and the query (presigned URLs carry their
    signature there) and fragment replaced by a marker, so reasons and logs can name it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_public_address(address: str) -> bool:
    """True when a resolved address is safe to fetch from: deny by default, allow only globally
    routable unicast, looking inside IPv6 forms that embed an IPv4 address."""
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return _is_public(ip)


def _is_public(ip: IPv4Address | IPv6Address) -> bool:
    if ip in _METADATA:
        return False
    if isinstance(ip, IPv6Address):
        # An IPv4 address carried in IPv6 is reached as that IPv4 address, so it is judged as one.
        if ip.ipv4_mapped is not None:
            return _is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return _is_public(IPv4Address(int(ip) & 0xFFFFFFFF))
        tunnelled = [ip.sixtofour, *(ip.teredo or ())]
        if any(v4 is not None and not _is_public(v4) for v4 in tunnelled) or ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def clean_etag(value: str | None) -> str | None:
    """``"abc"`` → ``abc`` and ``W/"abc"`` → ``W/abc``: the same object always gives the same
    string, which is what the idempotency key needs."""
    if not value:
        return None
    value = value.strip()
    weak = value.startswith("W/")
    inner = value[2:] if weak else value
    inner = inner.strip('"')
    return f"W/{inner}" if weak else inner or None


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


def make_s3_client(settings: Settings) -> S3Client:
    """The boto3 S3 client every part of tagger uses (fetcher, backfill listing, write-back):
    timeouts, retries, addressing style and endpoint from Settings, so they all reach the
    same buckets the same way. Credentials come from boto3's default chain."""
    fetch, s3 = settings.fetch, settings.s3
    config = Config(
        connect_timeout=fetch.connect_timeout,
        read_timeout=fetch.read_timeout,
        retries={"max_attempts": s3.max_attempts, "mode": "standard"},
        s3={"addressing_style": s3.addressing_style},
        max_pool_connections=max(10, fetch.io_threads),
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=s3.endpoint_url, region_name=s3.region, config=config
    )


class Fetcher:
    """Fetches photo bytes for the pipeline; one per process, shared by the download threads."""

    def __init__(self, settings: Settings, *, allow_local_paths: bool | None = None) -> None:
        self._settings = settings
        self._allow_local = (
            settings.fetch.allow_local_paths if allow_local_paths is None else allow_local_paths
        )
        self._s3: S3Client | None = None
        self._s3_lock = threading.Lock()
        self._http = urllib3.PoolManager(
            num_pools=max(16, 2 * settings.fetch.io_threads),
            maxsize=settings.fetch.io_threads,
        )

    # -- public API -------------------------------------------------------------------------

    def fetch(self, ref: PhotoRef) -> Fetched:
        """The photo's bytes; raises only TaggerError subclasses."""
        try:
            if ref.kind == "s3":
                return self._fetch_s3(ref)
            if ref.kind in ("https", "http"):
                return self._fetch_http(ref)
            return self._fetch_file(ref)
        except TaggerError:
            raise
        except Exception as exc:  # the pipeline's contract: typed errors only
            raise FetchFailed(f"{self._shown(ref)}: unexpected {type(exc).__name__}") from None

    def head(self, ref: PhotoRef) -> str | None:
        """The S3 ETag without downloading, so a repeat can be skipped cheaply; None for URLs
        and files, whose version is only known from their content."""
        if ref.kind != "s3":
            return None
        bucket, key = ref.bucket_key
        try:
            response = self.s3_client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(str(ref), exc) from exc
        except Exception as exc:  # typed errors only, as for fetch
            raise FetchFailed(f"{ref}: unexpected {type(exc).__name__}") from exc
        return clean_etag(response.get("ETag"))

    def close(self) -> None:
        self._http.clear()
        with self._s3_lock:
            if self._s3 is not None:
                self._s3.close()
                self._s3 = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def s3_client(self) -> S3Client:
        """The one boto3 client, made on first use so file- and URL-only runs never need AWS
        configuration. Creating clients is not thread-safe in boto3; using one is."""
        with self._s3_lock:
            if self._s3 is None:
                self._s3 = make_s3_client(self._settings)
            return self._s3

    # -- S3 -----------------------------------------------------------------------------------

    def _fetch_s3(self, ref: PhotoRef) -> Fetched:
        bucket, key = ref.bucket_key
        shown = str(ref)
        limit = self._settings.image.max_bytes
        deadline = time.monotonic() + self._settings.fetch.total_timeout
        try:
            response = self.s3_client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                data = _read_bounded(
                    body.read, response.get("ContentLength"), shown, limit, deadline
                )
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(shown, exc) from exc
        return Fetched(ref=ref.uri, data=data, etag=clean_etag(response.get("ETag")))

    # -- files --------------------------------------------------------------------------------

    def _fetch_file(self, ref: PhotoRef) -> Fetched:
        shown = ref.uri
        if not self._allow_local:
            raise RefusedReference(f"{shown}: local paths are not allowed here")
        path = Path(ref.uri)
        limit = self._settings.image.max_bytes
        try:
            info = path.stat()
            if stat.S_ISDIR(info.st_mode):
                raise NotAnImage(f"{shown}: is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise NotAnImage(f"{shown}: not a regular file")
            if info.st_size > limit:
                raise ImageTooLarge(f"{shown}: {info.st_size} bytes, over the {limit}-byte limit")
            with path.open("rb") as handle:
                data = handle.read(limit + 1)  # the file may have grown since stat
        except FileNotFoundError:
            raise NotFound(f"{shown}: no such file") from None
        except PermissionError:
            raise AccessDenied(f"{shown}: permission denied") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
                raise NotFound(f"{shown}: {exc.strerror}") from None
            raise FetchFailed(f"{shown}: {exc.strerror or type(exc).__name__}") from None
        if len(data) > limit:
            raise ImageTooLarge(f"{shown}: more than {limit} bytes")
        return Fetched(ref=ref.uri, data=data, etag=None)

    # -- HTTP(S) ------------------------------------------------------------------------------

    def _fetch_http(self, ref: PhotoRef) -> Fetched:
        fetch = self._settings.fetch
        deadline = time.monotonic() + fetch.total_timeout
        url = ref.uri
        for hop in range(fetch.max_redirects + 1):
            where = redact_url(url) if hop == 0 else f"{redact_url(ref.uri)} → {redact_url(url)}"
            target = self._check_url(url, where)
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
            f"{redact_url(ref.uri)}: more than {fetch.max_redirects} redirects (last to "
            f"{redact_url(url)})"
        )

    def _check_url(self, url: str, where: str) -> _Target:
        try:
            parsed = parse_url(url)
        except LocationParseError:
            raise RefusedReference(f"{where}: malformed URL") from None
        scheme = (parsed.scheme or "").lower()
        if scheme == "http" and not self._settings.fetch.allow_http:
            raise RefusedReference(f"{where}: plain http is not allowed (fetch.allow_http)")
        if scheme not in _DEFAULT_PORTS:
            raise RefusedReference(f"{where}: scheme {scheme or 'none'!r} is not fetchable")
        if not parsed.host:
            raise RefusedReference(f"{where}: URL has no host")
        port = parsed.port or _DEFAULT_PORTS[scheme]
        host_header = (
            parsed.host
            if parsed.port in (None, _DEFAULT_PORTS[scheme])
            else (f"{parsed.host}:{parsed.port}")
        )
        return _Target(
            scheme=scheme,
            host=parsed.host.strip("[]"),
            port=port,
            host_header=host_header,
            request_uri=parsed.request_uri,
        )

    def _resolve(self, target: _Target, where: str) -> list[str]:
        """Every address of the host, all of them checked: a name with one private answer
        among public ones is refused, since the resolver may hand out either."""
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise NotFound(f"{where}: host not found") from None
            raise FetchFailed(f"{where}: name resolution failed ({exc.strerror})") from None
        except (UnicodeError, OSError):
            raise RefusedReference(f"{where}: invalid host name") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self._settings.fetch.allow_private_addresses:
            for address in addresses:
                if not is_public_address(address):
                    raise RefusedReference(
                        f"{where}: host resolves to non-public address {address}"
                    )
        return addresses

    def _open(self, target: _Target, where: str, deadline: float) -> BaseHTTPResponse:
        fetch = self._settings.fetch
        headers = {**_HEADERS, "Host": target.host_header}
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            pool_kwargs["server_hostname"] = target.host
        failure: BaseException | None = None
        for address in self._resolve(target, where):
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
                connect=min(fetch.connect_timeout, remaining),
                read=min(fetch.read_timeout, remaining),
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
        limit = self._settings.image.max_bytes
        try:
            return _read_bounded(response.read1, declared, where, limit, deadline)
        except (HTTPError, OSError) as exc:
            raise FetchFailed(f"{where}: reading the body failed ({_describe(exc)})") from None

    @staticmethod
    def _shown(ref: PhotoRef) -> str:
        return redact_url(ref.uri) if ref.kind in ("http", "https") else ref.uri


def _read_bounded(
    read: Callable[[int], bytes], declared: int | None, where: str, limit: int, deadline: float
) -> bytes:
    """One body, S3 or HTTP: refused up front when its declared size is over the limit, then
    counted chunk by chunk, so a lying or missing length and a trickling sender are caught too."""
    if declared is not None and declared > limit:
        raise ImageTooLarge(f"{where}: {declared} bytes, over the {limit}-byte limit")
    data = bytearray()
    while chunk := read(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise ImageTooLarge(f"{where}: more than {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchFailed(f"{where}: download took longer than the total timeout")
    return bytes(data)


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


def _s3_error(shown: str, exc: ClientError | BotoCoreError) -> TaggerError:
    """botocore's failure as a typed error; botocore has already retried what it retries."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = f"{shown}: S3 {code or 'error'} (HTTP {status})"
        if code in _S3_TRANSIENT or status in (408, 429) or status >= 500:
            return FetchFailed(reason)
        if code in _S3_NOT_FOUND or status == 404:
            return NotFound(reason)
        if code in _S3_DENIED or status in (401, 403):
            return AccessDenied(reason)
        return PermanentError(reason)
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{shown}: no AWS credentials found")
    if isinstance(exc, ParamValidationError):
        return NotFound(f"{shown}: not a valid S3 bucket or key")
    return FetchFailed(f"{shown}: {type(exc).__name__}: {exc}")
