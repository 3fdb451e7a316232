"""Prometheus metrics of the workers, the listeners and the API: what they count and how they
are exposed.

The metric objects below are module globals because that is how prometheus_client works: a
metric registers itself once per process, and every caller increments the same object. They
are the only state here; everything else is a function. Call sites use the small helpers
(``record_results``, ``time_analyzer`` …) so label values stay consistent and a name change
is one edit.

Multiprocess mode. A Celery prefork worker is one main process and N children, and each child
counts on its own. prometheus_client aggregates them through memory-mapped files in the folder
named by ``PROMETHEUS_MULTIPROC_DIR``; the library reads that variable once, when it is first
imported, and picks its value class then. It must therefore be in the environment before any
tagger module is imported in the worker, which Settings cannot do from inside the process:
``tagger worker`` prepares the folder (:func:`multiprocess_env`, from ``Settings.metrics``),
puts the variable in its own environment and only then execs Celery, whose children inherit
it. The worker's main process serves ``/metrics`` from :func:`exposition_registry`, which in
that mode reads every process's files. Listeners are one process each and use the default
registry. Nothing in tagger reads the variable; only the library does.

Label values are bounded: statuses, error codes (:class:`~tagger.errors.ErrorCode`), analyser
and source names, listener names, and for the API the route *template* (never the raw path).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_asgi_app,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tagger.config import MetricsSettings
from tagger.schemas import TagResult

log = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads at import to switch to multiprocess mode."""

NO_ERROR: Final = "none"
"""The ``error`` label of a photo that did not fail."""

_SECONDS_SHORT: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SECONDS_TASK: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800)

# -- workers -------------------------------------------------------------------------------

PHOTOS = Counter(
    "tagger_photos",
    "Photos a worker finished, by status (tagged, failed, skipped) and error code (none "
    "unless failed). A redelivered batch counts its photos again (as skipped).",
    ["status", "error"],
)
TASK_SECONDS = Histogram(
    "tagger_task_seconds",
    "Seconds one tagging task (a batch of references) took, by outcome: done, retry "
    "(transient failures re-sent), requeued (store unavailable), error.",
    ["outcome"],
    buckets=_SECONDS_TASK,
)
INFERENCE_BATCH_SECONDS = Histogram(
    "tagger_inference_batch_seconds",
    "Seconds the enabled analysers took together on one inference batch (downloads excluded).",
    buckets=_SECONDS_SHORT,
)
ANALYZER_SECONDS = Histogram(
    "tagger_analyzer_seconds",
    "Seconds one analyser took on one inference batch.",
    ["analyzer"],
    buckets=_SECONDS_SHORT,
)
FETCHED_BYTES = Counter(
    "tagger_fetched_bytes",
    "Bytes of photos read from their source, by scheme (s3, https, http, file).",
    ["source"],
)
TASK_RETRIES = Counter(
    "tagger_task_retries",
    "Tagging tasks sent back to the queue by the task itself: transient (its transiently "
    "failed photos re-sent after a backoff), store_unavailable (handed back unacked).",
    ["reason"],
)
REQUEUES = Counter(
    "tagger_requeues",
    "Unacked tasks the broker transport put back in the queue: visibility_timeout (a dead "
    "worker's batch, restored by the visibility sweep), shutdown (held messages restored as "
    "a worker's connection closed).",
    ["reason"],
)
ANALYZER_INFO = Gauge(
    "tagger_analyzer_info",
    "The analysers the worker processes run and their versions; always 1. An Info metric "
    "in all but name: prometheus_client's Info does not work in multiprocess mode.",
    ["name", "version"],
    multiprocess_mode="livemax",
)

# -- listeners -----------------------------------------------------------------------------

Listener = Literal["sqs", "webhook"]

LISTENER_RECEIVED = Counter(
    "tagger_listener_events_received",
    "Notifications a listener received: SQS messages, authorised webhook POST bodies.",
    ["listener"],
)
LISTENER_MALFORMED = Counter(
    "tagger_listener_events_malformed",
    "Notifications refused as malformed (not JSON, not a notification, too large or deep).",
    ["listener"],
)
LISTENER_SUBMITTED = Counter(
    "tagger_listener_photos_submitted",
    "Photo references a listener submitted as tagging work.",
    ["listener"],
)
LISTENER_SUBMIT_FAILURES = Counter(
    "tagger_listener_submit_failures",
    "Submits that failed (broker or store down); the events are kept and submitted later.",
    ["listener"],
)

# -- the HTTP API --------------------------------------------------------------------------

API_REQUESTS = Counter(
    "tagger_api_requests",
    "HTTP API requests by route template, method and status code.",
    ["route", "method", "status"],
)
API_SECONDS = Histogram(
    "tagger_api_request_seconds",
    "Seconds the HTTP API took to answer, by route template and method.",
    ["route", "method"],
)


# -- helpers for the call sites --------------------------------------------------------------


def record_results(results: Iterable[TagResult]) -> None:
    """Count finished photos by status and error code."""
    for result in results:
        error = str(result.error) if result.error is not None else NO_ERROR
        PHOTOS.labels(status=result.status.value, error=error).inc()


def record_analyzers(versions: Mapping[str, str]) -> None:
    """Publish the analysers this process runs, name and version."""
    for name, version in versions.items():
        ANALYZER_INFO.labels(name=name, version=version).set(1)


def time_analyzer(name: str) -> AbstractContextManager[Any]:
    """``with time_analyzer("classify"): …`` observes the block's seconds, raised or not."""
    return ANALYZER_SECONDS.labels(analyzer=name).time()


def observe_inference_batch(seconds: float) -> None:
    INFERENCE_BATCH_SECONDS.observe(seconds)


TaskOutcome = Literal["done", "retry", "requeued", "error"]


def observe_task(outcome: TaskOutcome, seconds: float) -> None:
    TASK_SECONDS.labels(outcome=outcome).observe(seconds)


def count_fetched(bytes_by_source: Mapping[str, int]) -> None:
    """Add what a :class:`~tagger.sources.Fetcher` read since it was last asked."""
    for source, count in bytes_by_source.items():
        if count:
            FETCHED_BYTES.labels(source=source).inc(count)


def count_retry(reason: Literal["transient", "store_unavailable"]) -> None:
    TASK_RETRIES.labels(reason=reason).inc()


RequeueReason = Literal["visibility_timeout", "shutdown"]


def count_requeues(reason: RequeueReason, count: int = 1) -> None:
    if count:
        REQUEUES.labels(reason=reason).inc(count)


def count_listener(
    listener: Listener,
    *,
    received: int = 0,
    malformed: int = 0,
    submitted: int = 0,
    submit_failures: int = 0,
) -> None:
    """Add one listener's events; zeros are skipped, so a quiet poll writes nothing."""
    for counter, amount in (
        (LISTENER_RECEIVED, received),
        (LISTENER_MALFORMED, malformed),
        (LISTENER_SUBMITTED, submitted),
        (LISTENER_SUBMIT_FAILURES, submit_failures),
    ):
        if amount:
            counter.labels(listener=listener).inc(amount)


def observe_api_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered API request. ``route`` is the route's template (``/photos/{ref}``), never
    the requested path: a label value per photo would grow without bound."""
    API_REQUESTS.labels(route=route, method=method.upper(), status=str(status)).inc()
    API_SECONDS.labels(route=route, method=method.upper()).observe(seconds)


# -- exposition ------------------------------------------------------------------------------


def multiprocess_active() -> bool:
    """Whether prometheus_client started in multiprocess mode (its variable was set when it
    was first imported); the value class it chose then says so."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class QueueDepthCollector:
    """``tagger_queue_depth{queue}``, asked of the broker when Prometheus scrapes, so the
    cost is one broker call per scrape and nothing at all between scrapes. A broker that does
    not answer leaves the sample out rather than failing the whole scrape."""

    def __init__(self, queues: Mapping[str, Callable[[], int]]) -> None:
        self._queues = dict(queues)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for queue, depth in self._queues.items():
            try:
                family.add_metric([queue], depth())
            except Exception as exc:  # any broker error: this sample is missing, no more
                log.warning(
                    "queue depth unavailable", extra={"queue": queue, "error": type(exc).__name__}
                )
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "tagger_queue_depth", "Tagging tasks waiting in the broker queue.", labels=["queue"]
        )


def exposition_registry(*collectors: Collector) -> CollectorRegistry:
    """The registry to serve: in multiprocess mode a fresh one that merges every process's
    files (the library finds the folder), else the process's default registry; plus
    ``collectors`` computed at scrape time (:class:`QueueDepthCollector`)."""
    registry = CollectorRegistry()
    if multiprocess_active():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    for collector in collectors:
        registry.register(collector)
    return registry


class _Default:
    """The default registry seen through a fresh one, so adding scrape-time collectors for
    one server never registers them process-wide."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def asgi_app() -> Callable[..., Any]:
    """An ASGI app answering ``/metrics`` for the HTTP API to mount (Starlette's
    ``app.mount("/metrics", asgi_app())``), serving :func:`exposition_registry`."""
    return make_asgi_app(exposition_registry())


def serve(port: int, host: str, registry: CollectorRegistry | None = None) -> bool:
    """Serve ``/metrics`` on a daemon thread; False, logged, when the port is taken (a second
    worker on the same host) or ``port`` is 0 (off). The process goes on either way: metrics
    must never stop the work they measure."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host, registry=registry or exposition_registry())
    except OSError as exc:
        log.warning(
            "metrics endpoint not started", extra={"host": host, "port": port, "error": str(exc)}
        )
        return False
    log.info("metrics endpoint listening", extra={"host": host, "port": port, "path": "/metrics"})
    return True


def multiprocess_env(settings: MetricsSettings, pid: int) -> dict[str, str]:
    """The environment a multiprocess server (the worker; the API with several uvicorn
    workers) must start its processes with, see the module docstring: a folder of its own,
    ``<multiproc_dir>/<pid>``, emptied, since files left by an earlier process with the same
    PID (a restarted container) would be added to the new one's counts. Folders of servers no
    longer running are removed; those of live ones (a second worker on the same host) are
    left alone."""
    base = settings.multiproc_dir
    base.mkdir(parents=True, exist_ok=True)
    for folder in base.iterdir():
        owner = int(folder.name) if folder.name.isdigit() else None
        if owner is not None and owner != pid and not _pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)
    own = base / str(pid)
    shutil.rmtree(own, ignore_errors=True)
    own.mkdir()
    return {MULTIPROC_ENV: str(own)}


def _pid_exists(pid: int) -> bool:
    """Whether a process with this PID is running on this host: signal 0 checks without
    sending anything (POSIX; the image and the workers are Linux). Another user's process
    exists too (``PermissionError``). PID 0 is not a server's, so its folder is left alone;
    a number too large to be a PID is no running process."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def process_exited(pid: int) -> None:
    """Drop a finished process's live gauges (its analyser versions); its counters stay, as
    counters must not go down. A no-op outside multiprocess mode."""
    if multiprocess_active():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
