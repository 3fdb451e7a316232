"""An HTTP endpoint for bucket notifications pushed by webhook: MinIO's webhook target, SNS
HTTP(S) subscriptions, or anything that POSTs S3-style event JSON.

``POST /events`` needs the listener token, either as ``Authorization: Bearer <token>`` (what
MinIO sends for its ``auth_token``) or as the password of HTTP Basic auth (SNS cannot send custom
headers, but it does send the ``user:password@`` of a subscription URL as Basic auth). Tokens
are compared with :func:`hmac.compare_digest`; without the right one the body is not parsed and
nothing is submitted (401). The endpoint answers fast and submits later: a parsed notification
goes into a bounded queue (503 with ``Retry-After`` when it is full, so the sender's own retry
or queue absorbs a burst or a broker outage) and one submitter thread drains it into jobs,
retrying a failed submit with backoff rather than dropping the photos. Bodies over
``triggers.http_max_body_bytes`` are refused (413) before they are read; a body the parser
refuses (not JSON, not a notification, nested too deep) gets 400 with the reason, and an
unexpected error 500, each logged once: no body ends the server or its submitter thread.
``GET /healthz`` says
whether the submitter is alive and how much is waiting; ``HEAD`` answers MinIO's liveness
probe.

Built on the standard library's :class:`http.server.ThreadingHTTPServer`: the endpoint is two
routes and a token check, so a web framework would add a dependency and an attack surface for
nothing; each connection gets a thread and a socket timeout, so a slow client holds only its own.

Access log: one structured line per request with the method, the path *without* its query
string and the status, nothing else. :class:`~http.server.BaseHTTPRequestHandler` would log the
raw request line, and a sender configured with ``/events?token=…`` would put its secret in
every line; the handler's own error lines can quote that line too, so they are replaced as well.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import queue
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tagger import metrics
from tagger.config import Settings
from tagger.errors import ErrorCode
from tagger.submitting import Submitter
from tagger.triggers.parser import EventBatch, EventTooLarge, MalformedEvent, parse_notification
from tagger.triggers.sns import ConfirmationFailed, SubscriptionConfirmer

log = logging.getLogger(__name__)

_MAX_REFS_PER_JOB = 1000
_MAX_BACKOFF = 30.0
_SOCKET_TIMEOUT = 15.0
_MAX_LOGGED_PATH = 200


class WebhookListener:
    """The HTTP server and its submitter thread; start, then stop (draining what was accepted)."""

    def __init__(
        self,
        settings: Settings,
        submitter: Submitter,
        *,
        host: str | None = None,
        port: int | None = None,
        confirmer: SubscriptionConfirmer | None = None,
    ) -> None:
        if settings.listener_token is None or not settings.listener_token.get_secret_value():
            raise ValueError("the webhook listener needs a token: set TAGGER_LISTENER_TOKEN")
        self._token = settings.listener_token.get_secret_value().encode()
        self._triggers = settings.triggers
        self._submitter = submitter
        self._confirmer = confirmer or SubscriptionConfirmer(settings)
        self._pending: queue.Queue[EventBatch] = queue.Queue(self._triggers.http_queue_size)
        self._stopping = threading.Event()
        self._server = _Server(
            (host or self._triggers.http_host, self._triggers.http_port if port is None else port),
            _Handler,
            self,
        )
        self._serving = threading.Thread(
            target=self._server.serve_forever, name="webhook-http", daemon=True
        )
        self._submitting = threading.Thread(
            target=self._submit_loop, name="webhook-submit", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebhookListener:
        self._submitting.start()
        self._serving.start()
        host, port = self.address
        log.info("webhook listening", extra={"host": host, "port": port, "path": "/events"})
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, then submit what was already accepted (within ``timeout``)."""
        if self._serving.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        self._stopping.set()
        self._submitting.join(timeout)
        left = self._pending.qsize()
        if left or self._submitting.is_alive():
            log.error("webhook stopped with notifications not submitted", extra={"count": left})
        log.info("webhook stopped")

    def __enter__(self) -> WebhookListener:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- called from request threads --------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            offered = credentials.encode()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            offered = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(offered, self._token)

    def accept(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """The answer to one authorised POST: 400/413 for a body the parser refuses, 500 for
        a bug (logged with its traceback), else 200 (nothing to do), 202 or 503."""
        metrics.count_listener("webhook", received=1)
        try:
            batch = parse_notification(body, self._triggers)
        except EventTooLarge as exc:
            log.warning("oversized notification refused", extra={"reason": exc.reason})
            metrics.count_listener("webhook", malformed=1)
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too_large", "reason": exc.reason}
        except MalformedEvent as exc:
            log.warning("malformed notification refused", extra={"reason": exc.reason})
            metrics.count_listener("webhook", malformed=1)
            return HTTPStatus.BAD_REQUEST, {"error": exc.code, "reason": exc.reason}
        except Exception:
            log.error("notification handling failed", exc_info=True)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": ErrorCode.INTERNAL}
        answer = {
            "accepted": len(batch.refs()),
            "skipped": len(batch.skipped),
            "duplicates": batch.duplicates,
            "confirmations": len(batch.confirmations),
        }
        if not batch.objects and not batch.confirmations:
            return HTTPStatus.OK, answer
        try:
            self._pending.put_nowait(batch)
        except queue.Full:
            log.warning("webhook queue full; notification refused with 503")
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "busy", "reason": "queue full"}
        return HTTPStatus.ACCEPTED, answer

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        alive = self._submitting.is_alive()
        status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
        return status, {"status": "ok" if alive else "down", "pending": self._pending.qsize()}

    @property
    def max_body(self) -> int:
        return self._triggers.http_max_body_bytes

    # -- the submitter thread ---------------------------------------------------------------

    def _submit_loop(self) -> None:
        """Until stopped and drained; an unexpected error loses that one merged batch (logged
        with its traceback), never the thread, which /healthz reports on."""
        while not (self._stopping.is_set() and self._pending.empty()):
            try:
                first = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                batch = EventBatch.merge([first, *self._drain(len(first.objects))])
                self._confirm(batch)
                refs = batch.refs()
                if refs:
                    self._submit(refs)
            except Exception:
                log.error("webhook submit loop failed", exc_info=True)

    def _drain(self, have: int) -> list[EventBatch]:
        """More waiting notifications, so a burst becomes one job rather than one per POST."""
        more: list[EventBatch] = []
        while have < _MAX_REFS_PER_JOB:
            try:
                batch = self._pending.get_nowait()
            except queue.Empty:
                break
            more.append(batch)
            have += len(batch.objects)
        return more

    def _confirm(self, batch: EventBatch) -> None:
        for request in batch.confirmations:
            try:
                self._confirmer.confirm(request)
            except ConfirmationFailed as exc:  # SNS resends the confirmation; nothing is lost
                log.error("sns confirmation failed", extra={"error": str(exc)})

    def _submit(self, refs: list[str]) -> None:
        """Submit, retrying with backoff until it works or the listener stops (then one last
        try); meanwhile the queue fills and senders get 503, so they keep the events."""
        backoff = 1.0
        while True:
            try:
                job = self._submitter.submit(refs)
            except Exception as exc:  # broker or store down: keep the refs, try again
                metrics.count_listener("webhook", submit_failures=1)
                if self._stopping.is_set() and backoff > 1.0:
                    log.error("webhook gave up submitting at shutdown", extra={"refs": len(refs)})
                    return
                log.error("submit failed; retrying", extra={"refs": len(refs), "error": str(exc)})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            log.info("submitted", extra={"job_id": job.id, "refs": len(refs)})
            metrics.count_listener("webhook", submitted=len(refs))
            return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], app: WebhookListener
    ) -> None:
        super().__init__(address, handler)
        self.app = app

    def handle_error(self, request: object, client_address: object) -> None:
        """A request thread's unexpected error, through logging (the default prints a bare
        traceback to stderr); the server goes on either way."""
        log.error("webhook request failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _SOCKET_TIMEOUT
    server_version = "tagger-webhook"
    sys_version = ""

    def do_POST(self) -> None:
        app = self.server.app
        if self.path.split("?", 1)[0] != "/events":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not_found"})
            return
        length = self._content_length()
        if length is None:
            return
        if not app.authorized(self.headers.get("Authorization")):
            self._discard(min(length, app.max_body))
            self._reply(
                HTTPStatus.UNAUTHORIZED,
                {"error": "unauthorized"},
                {"WWW-Authenticate": 'Bearer realm="tagger"'},
            )
            return
        if length > app.max_body:
            metrics.count_listener("webhook", received=1, malformed=1)
            self._reply(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": "too_large", "reason": f"body over {app.max_body} bytes"},
            )
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "truncated body"})
            return
        status, answer = app.accept(body)
        extra = {"Retry-After": "5"} if status is HTTPStatus.SERVICE_UNAVAILABLE else {}
        self._reply(status, answer, extra)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._reply(*self.server.app.health())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not_found"})

    def do_HEAD(self) -> None:
        """MinIO checks that its webhook target is up with a HEAD before sending."""
        known = self.path.split("?", 1)[0] in ("/events", "/healthz")
        self.send_response(HTTPStatus.OK if known else HTTPStatus.NOT_FOUND)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "length_required"})
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        return length

    def _discard(self, length: int) -> None:
        """Read a refused body (bounded), so closing the socket does not reset the connection
        before the client has read our answer."""
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _reply(
        self,
        status: HTTPStatus,
        answer: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _logged_path(self) -> str:
        """The path alone: no query string or fragment (where a sender may have put a token),
        no scheme or user:password of an absolute-form target, and a bounded length."""
        raw = getattr(self, "path", "") or ""
        try:
            path = urlsplit(raw).path
        except ValueError:
            path = raw.split("?", 1)[0].split("#", 1)[0]
        return path[:_MAX_LOGGED_PATH]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One structured line per answered request: method, path without query, status."""
        status = int(code) if isinstance(code, int) or str(code).isdigit() else None
        fields = {"method": getattr(self, "command", None), "path": self._logged_path()}
        log.info("http request", extra={**fields, "status": status})

    def log_error(self, format: str, *args: Any) -> None:
        """The base class's error lines quote the raw request line (query and all), so only
        that there was one; the status line from :meth:`log_request` usually follows."""
        fields = {"method": getattr(self, "command", None), "path": self._logged_path()}
        log.debug("http request error", extra=fields)

    def log_message(self, format: str, *args: Any) -> None:
        """Anything else the base class would print: a constant message, never its arguments,
        which may hold the raw request line."""
        log.info("http event", extra={"method": getattr(self, "command", None)})
