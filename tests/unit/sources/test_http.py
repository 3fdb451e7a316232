"""The https/http source against real local servers (plain HTTP and TLS on 127.0.0.1): URL
safety on every hop, limits, timeouts, typed errors and reasons without credentials."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3.util.connection

from tagger.errors import (
    AccessDenied,
    FetchFailed,
    ImageTooLarge,
    NotFound,
    RefusedReference,
    TaggerError,
)
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher, urlsafety
from tests.unit.sources.conftest import fetch, make_settings

ETAG = '"v1-abc"'
SECRET = "SIGNATURE-SECRET-123"


# -- a real HTTP(S) server on loopback ----------------------------------------------------------


@dataclass
class Seen:
    path: str
    host: str | None


@dataclass
class LocalServer:
    port: int
    scheme: str
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


def _handler(server: LocalServer, photo: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.seen.append(Seen(self.path, self.headers.get("Host")))
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._route(path, query)

        def _route(self, path: str, query: dict[str, list[str]]) -> None:
            if path == "/photo.jpg":
                self._send(200, photo, Content_Type="image/jpeg", ETag=ETAG)
            elif path in ("/missing", "/gone", "/denied", "/boom", "/busy"):
                status = {"/missing": 404, "/gone": 410, "/denied": 403, "/boom": 500}
                self._send(status.get(path, 429), b"nope")
            elif path.startswith("/redirect/"):
                left = int(path.rsplit("/", 1)[1])
                target = "/photo.jpg" if left <= 1 else f"/redirect/{left - 1}"  # N hops
                self._send(302, Location=target)
            elif path == "/to":
                self._send(302, Location=query["loc"][0])
            elif path == "/endless":  # chunked, no Content-Length, never ends on its own
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"\xff" * 16384
                for _ in range(4096):  # 64 MiB at most, should a client never stop reading
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            elif path == "/declared-huge":
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.write(b"\x00" * 1024)
                self.close_connection = True
            elif path == "/slow":
                time.sleep(2.0)
                self._send(200, photo)
            elif path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "10000")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self._send(404)

    return Handler


@pytest.fixture
def serve(photo: bytes) -> Iterator[Callable[..., LocalServer]]:
    """Start HTTP or HTTPS servers on 127.0.0.1; every one is shut down after the test."""
    running: list[ThreadingHTTPServer] = []

    def start(tls: ssl.SSLContext | None = None) -> LocalServer:
        local = LocalServer(port=0, scheme="https" if tls else "http")
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(local, photo))
        httpd.daemon_threads = True
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: local.sni.append(name)
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        local.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        running.append(httpd)
        return local

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(serve: Callable[..., LocalServer]) -> LocalServer:
    return serve()


@pytest.fixture
def open_fetcher(tmp_path: Path) -> Iterator[Callable[..., Fetcher]]:
    """A Fetcher for the local servers: loopback and http allowed unless a test says otherwise."""
    made: list[Fetcher] = []

    def make(**kw: Any) -> Fetcher:
        kw.setdefault("allow_private_addresses", True)
        kw.setdefault("allow_http", True)
        local = kw.pop("allow_local_paths_arg", None)
        fetcher = Fetcher(make_settings(tmp_path, **kw), allow_local_paths=local)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record (and block) every outgoing TCP connection urllib3 tries to make."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise OSError("test: connection blocked")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1/photo.jpg",
        "https://10.0.0.5/photo.jpg",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/photo.jpg",
        "https://[::ffff:169.254.169.254]/photo.jpg",
        "https://[fd00:ec2::254]/photo.jpg",
        "https://localhost/photo.jpg",
        "https://0.0.0.0/photo.jpg",
    ],
)
def test_private_targets_refused_without_connecting(
    tmp_path: Path, no_connect: list[tuple[Any, ...]], uri: str
) -> None:
    fetcher = Fetcher(make_settings(tmp_path))
    with pytest.raises(RefusedReference, match="non-public address"):
        fetcher.fetch(PhotoRef(uri=uri))
    assert no_connect == []


def test_refused_loopback_server_never_sees_the_request(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    fetcher = open_fetcher(allow_private_addresses=False)
    with pytest.raises(RefusedReference):
        fetch(fetcher, server.url("/photo.jpg"))
    with pytest.raises(RefusedReference):
        fetch(fetcher, server.url("/photo.jpg", host="localhost"))
    assert server.seen == []


def test_name_with_one_private_answer_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_connect: list[tuple[Any, ...]]
) -> None:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "mixed.example"
        tcp = (socket.SOCK_STREAM, 6, "")
        return [
            (socket.AF_INET, *tcp, ("93.184.216.34", port)),
            (socket.AF_INET, *tcp, ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(RefusedReference, match=r"127\.0\.0\.1"):
        fetch(Fetcher(make_settings(tmp_path)), "https://mixed.example/photo.jpg")
    assert no_connect == []


def test_connects_to_the_checked_address_not_a_second_dns_answer(
    server: LocalServer,
    open_fetcher: Callable[..., Fetcher],
    monkeypatch: pytest.MonkeyPatch,
    photo: bytes,
) -> None:
    """DNS rebinding: the name must be resolved once per hop and that answer connected to."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            lookups.append(host)
            if len(lookups) > 1:
                raise socket.gaierror(socket.EAI_AGAIN, "second lookup of a checked name")
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert fetch(open_fetcher(), server.url("/photo.jpg", host="rebind.example")) == photo
    assert lookups == ["rebind.example"]
    assert [s.host for s in server.seen] == [f"rebind.example:{server.port}"]


# -- scheme and local path policy -------------------------------------------------------------


def test_plain_http_only_when_allowed(
    server: LocalServer, open_fetcher: Callable[..., Fetcher], photo: bytes
) -> None:
    with pytest.raises(RefusedReference, match="http"):
        fetch(open_fetcher(allow_http=False), server.url("/photo.jpg"))
    assert server.seen == []
    assert fetch(open_fetcher(allow_http=True), server.url("/photo.jpg")) == photo


# -- downloads from a real local server -------------------------------------------------------


def test_fetches_photo_with_etag_and_original_host(
    server: LocalServer, open_fetcher: Callable[..., Fetcher], photo: bytes
) -> None:
    uri = server.url("/photo.jpg", host="localhost")
    fetched = open_fetcher().fetch(PhotoRef(uri=uri))
    assert fetched.data == photo
    assert fetched.etag == "v1-abc"
    assert fetched.ref == uri
    assert server.seen[-1].host == f"localhost:{server.port}"
    assert len(repr(fetched)) < 200  # the bytes stay out of log lines


@pytest.mark.parametrize(
    ("path", "error", "permanent"),
    [
        ("/missing", NotFound, True),
        ("/gone", NotFound, True),
        ("/denied", AccessDenied, True),
        ("/boom", FetchFailed, False),
        ("/busy", FetchFailed, False),
    ],
)
def test_http_status_becomes_typed_error(
    server: LocalServer,
    open_fetcher: Callable[..., Fetcher],
    path: str,
    error: type[TaggerError],
    permanent: bool,
) -> None:
    with pytest.raises(error) as caught:
        fetch(open_fetcher(), server.url(path))
    assert caught.value.permanent is permanent
    assert caught.type is error


def test_endless_chunked_body_stops_at_the_limit(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageTooLarge, match="more than 100000 bytes"):
        fetch(open_fetcher(max_bytes=100_000), server.url("/endless"))
    assert time.monotonic() - started < 5


def test_declared_length_over_limit_is_refused_before_reading(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    with pytest.raises(ImageTooLarge, match="1000000000 bytes"):
        fetch(open_fetcher(max_bytes=100_000), server.url("/declared-huge"))


def test_redirects_are_followed_up_to_the_limit(
    server: LocalServer, open_fetcher: Callable[..., Fetcher], photo: bytes
) -> None:
    fetcher = open_fetcher(max_redirects=3)
    assert fetch(fetcher, server.url("/redirect/3")) == photo
    server.seen.clear()
    with pytest.raises(RefusedReference, match="more than 3 redirects"):
        fetch(fetcher, server.url("/redirect/4"))
    assert len(server.seen) == 4  # the fifth hop is never requested


def test_every_redirect_hop_is_checked_again(
    server: LocalServer,
    open_fetcher: Callable[..., Fetcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pretend only 127.0.0.1 is public, so a hop to 127.0.0.2 plays the internal address.
    monkeypatch.setattr(urlsafety, "is_public_address", lambda a: a == "127.0.0.1")
    fetcher = open_fetcher(allow_private_addresses=False)
    with pytest.raises(RefusedReference, match=r"non-public address 127\.0\.0\.2"):
        fetch(fetcher, server.url(f"/to?loc=http://127.0.0.2:{server.port}/photo.jpg"))
    with pytest.raises(RefusedReference, match="scheme 'file'"):
        fetch(fetcher, server.url("/to?loc=file:///etc/passwd"))
    with pytest.raises(RefusedReference, match="scheme 's3'"):
        fetch(fetcher, server.url("/to?loc=s3://bucket/key.jpg"))
    assert all(s.path.startswith("/to?") for s in server.seen)


def test_slow_server_fails_as_transient(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out") as caught:
        fetch(open_fetcher(read_timeout=0.5), server.url("/slow"))
    assert caught.value.permanent is False
    assert time.monotonic() - started < 1.8


def test_trickling_server_is_cut_off_by_the_total_timeout(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="total timeout"):
        fetch(open_fetcher(read_timeout=5, total_timeout=1), server.url("/drip"))
    assert time.monotonic() - started < 3


def test_unreachable_port_fails_as_transient(open_fetcher: Callable[..., Fetcher]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchFailed, match="could not connect"):
        fetch(open_fetcher(), f"http://127.0.0.1:{port}/photo.jpg")


# -- no credentials in reasons ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kw", "error"),
    [
        ("/missing", {}, NotFound),
        ("/boom", {}, FetchFailed),
        ("/slow", {"read_timeout": 0.3}, FetchFailed),
        ("/endless", {"max_bytes": 1000}, ImageTooLarge),
        ("/redirect/9", {}, RefusedReference),
        ("/photo.jpg", {"allow_private_addresses": False}, RefusedReference),
        ("/photo.jpg", {"allow_http": False}, RefusedReference),
    ],
)
def test_reasons_never_contain_query_strings(
    server: LocalServer,
    open_fetcher: Callable[..., Fetcher],
    path: str,
    kw: dict[str, Any],
    error: type[TaggerError],
) -> None:
    uri = server.url(f"{path}?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}")
    with pytest.raises(error) as caught:
        fetch(open_fetcher(**kw), uri.replace("://", f"://user:{SECRET}@"))
    assert "<redacted>" in caught.value.reason
    assert SECRET not in "".join(traceback.format_exception(caught.value))


def test_redirect_query_is_redacted_too(
    server: LocalServer, open_fetcher: Callable[..., Fetcher]
) -> None:
    with pytest.raises(NotFound) as caught:
        fetch(open_fetcher(), server.url(f"/to?loc=/missing%3Fsig%3D{SECRET}"))
    assert SECRET not in caught.value.reason
    assert "/missing?<redacted>" in caught.value.reason


# -- HTTPS: SNI and certificates still use the name while connecting to the pinned IP ----------


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A CA the client trusts (via SSL_CERT_FILE) and a server certificate for localhost."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            usage = x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            )  # fmt: skip
            builder = builder.add_extension(usage, critical=True)
        else:
            names = x509.SubjectAlternativeName([x509.DNSName("localhost")])
            builder = builder.add_extension(names, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tagger test CA")])
    ca_cert = cert("tagger test CA", ca_key, ca_name, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("localhost", leaf_key, ca_name, ca_key, ca=False)

    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(
        leaf.public_bytes(pem)
        + leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "leaf.pem")
    return context


def test_https_sends_sni_and_verifies_the_name(
    tls: ssl.SSLContext,
    serve: Callable[..., LocalServer],
    open_fetcher: Callable[..., Fetcher],
    photo: bytes,
) -> None:
    server = serve(tls)
    fetcher = open_fetcher(allow_http=False)
    fetched = fetcher.fetch(PhotoRef(uri=server.url("/photo.jpg", host="localhost")))
    assert (fetched.data, fetched.etag) == (photo, "v1-abc")
    assert "localhost" in server.sni
    assert server.seen[-1].host == f"localhost:{server.port}"

    # Same server, same IP, but the certificate does not name 127.0.0.1: verification is on.
    with pytest.raises(FetchFailed, match="TLS"):
        fetch(fetcher, server.url("/photo.jpg"))


def test_https_redirect_to_plain_http_is_refused(
    tls: ssl.SSLContext,
    serve: Callable[..., LocalServer],
    open_fetcher: Callable[..., Fetcher],
) -> None:
    secure, plain = serve(tls), serve()
    target = plain.url("/photo.jpg", host="localhost")
    with pytest.raises(RefusedReference, match="plain http"):
        fetch(open_fetcher(allow_http=False), secure.url(f"/to?loc={target}", host="localhost"))
    assert plain.seen == []
