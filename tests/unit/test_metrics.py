"""tagger.metrics: the helpers' labels, the exposition, and multiprocess aggregation across real
processes (each writing its own files in a temporary folder, as prefork children do)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tagger import metrics
from tagger.config import MetricsSettings
from tagger.errors import ErrorCode
from tagger.schemas import Status, TagResult

ROOT = Path(__file__).resolve().parents[2]


def sample(metric: str, /, **labels: str) -> float:
    """The current value in this process's default registry (0 when never set)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text → samples by name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            found.setdefault(item.name, []).append((dict(item.labels), item.value))
    return found


# -- helpers and labels ----------------------------------------------------------------------


def test_results_are_counted_by_status_and_error_code() -> None:
    labels = [
        {"status": "tagged", "error": "none"},
        {"status": "skipped", "error": "none"},
        {"status": "failed", "error": "corrupt"},
        {"status": "failed", "error": "not_found"},
    ]
    before = [sample("tagger_photos_total", **one) for one in labels]
    metrics.record_results(
        [
            TagResult(ref="a", status=Status.TAGGED),
            TagResult(ref="b", status=Status.TAGGED),
            TagResult(ref="c", status=Status.SKIPPED),
            TagResult(ref="d", status=Status.FAILED, error=ErrorCode.CORRUPT),
            TagResult(ref="e", status=Status.FAILED, error=ErrorCode.NOT_FOUND),
        ]
    )
    after = [sample("tagger_photos_total", **one) for one in labels]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1]


def test_listener_events_are_counted_per_listener_and_zeros_write_nothing() -> None:
    received = sample("tagger_listener_events_received_total", listener="sqs")
    submitted = sample("tagger_listener_photos_submitted_total", listener="sqs")
    webhook = sample("tagger_listener_events_malformed_total", listener="webhook")
    metrics.count_listener("sqs", received=3, submitted=5)
    metrics.count_listener("webhook", malformed=1)
    assert sample("tagger_listener_events_received_total", listener="sqs") == received + 3
    assert sample("tagger_listener_photos_submitted_total", listener="sqs") == submitted + 5
    assert sample("tagger_listener_events_malformed_total", listener="webhook") == webhook + 1
    # a quiet poll adds no series: a zero is not an increment
    metrics.count_listener("sqs")
    quiet = sample("tagger_listener_submit_failures_total", listener="sqs")
    metrics.count_listener("sqs", submit_failures=0)
    assert sample("tagger_listener_submit_failures_total", listener="sqs") == quiet


def test_api_requests_are_labelled_by_route_template_method_and_status() -> None:
    route = "/v1/photos/{ref}"
    before = sample("tagger_api_requests_total", route=route, method="GET", status="404")
    count = sample("tagger_api_request_seconds_count", route=route, method="GET")
    metrics.observe_api_request(route, "get", 404, 0.012)
    assert sample("tagger_api_requests_total", route=route, method="GET", status="404") == (
        before + 1
    )
    assert sample("tagger_api_request_seconds_count", route=route, method="GET") == count + 1
    assert sample("tagger_api_request_seconds_bucket", route=route, method="GET", le="0.025") >= 1


def test_an_analyser_is_timed_even_when_it_raises() -> None:
    before = sample("tagger_analyzer_seconds_count", analyzer="unit-test")
    with pytest.raises(RuntimeError), metrics.time_analyzer("unit-test"):
        raise RuntimeError("model failed")
    with metrics.time_analyzer("unit-test"):
        time.sleep(0.01)
    assert sample("tagger_analyzer_seconds_count", analyzer="unit-test") == before + 2
    assert sample("tagger_analyzer_seconds_sum", analyzer="unit-test") >= 0.01


def test_task_retries_requeues_bytes_and_versions() -> None:
    retries = sample("tagger_task_retries_total", reason="store_unavailable")
    requeues = sample("tagger_requeues_total", reason="visibility_timeout")
    fetched = sample("tagger_fetched_bytes_total", source="https")
    tasks = sample("tagger_task_seconds_count", outcome="requeued")
    metrics.count_retry("store_unavailable")
    metrics.count_requeues("visibility_timeout", 2)
    metrics.count_requeues("shutdown", 0)
    metrics.count_fetched({"https": 1000, "s3": 0})
    metrics.observe_task("requeued", 60.0)
    metrics.record_analyzers({"classify": "abc123"})
    assert sample("tagger_task_retries_total", reason="store_unavailable") == retries + 1
    assert sample("tagger_requeues_total", reason="visibility_timeout") == requeues + 2
    assert sample("tagger_fetched_bytes_total", source="https") == fetched + 1000
    assert sample("tagger_task_seconds_count", outcome="requeued") == tasks + 1
    assert sample("tagger_analyzer_info", name="classify", version="abc123") == 1


# -- exposition ------------------------------------------------------------------------------


class FakeDepth:
    def __init__(self, answer: int | Exception) -> None:
        self.answer = answer

    def __call__(self) -> int:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_queue_depth_is_asked_at_scrape_time_and_a_dead_broker_only_drops_its_sample() -> None:
    depth = FakeDepth(7)
    collector = metrics.QueueDepthCollector({"tagger": depth, "backfill": FakeDepth(OSError())})
    registry = metrics.exposition_registry(collector)
    scraped = parse(generate_latest(registry).decode())
    assert scraped["tagger_queue_depth"] == [({"queue": "tagger"}, 7.0)]
    depth.answer = 3
    assert parse(generate_latest(registry).decode())["tagger_queue_depth"] == [
        ({"queue": "tagger"}, 3.0)
    ]
    # the rest of the process's metrics are served beside it; nothing leaks into the default
    assert "tagger_photos_total" in scraped
    assert REGISTRY.get_sample_value("tagger_queue_depth", {"queue": "tagger"}) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_over_http_and_a_taken_port_is_not_fatal() -> None:
    port = free_port()
    assert metrics.serve(port, "127.0.0.1") is True
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    assert "# TYPE tagger_photos_total counter" in body
    assert metrics.serve(port, "127.0.0.1") is False, "a second worker on this host goes on"
    assert metrics.serve(0, "127.0.0.1") is False, "0 = off"


def test_asgi_app_serves_the_exposition() -> None:
    import asyncio

    app = metrics.asgi_app()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    body = b"".join(part for m in sent if isinstance(part := m.get("body"), bytes))
    assert b"# TYPE tagger_api_requests_total counter" in body


def test_multiprocess_env_gives_a_fresh_folder_and_removes_only_dead_servers(
    tmp_path: Path,
) -> None:
    base = tmp_path / "metrics"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (base / str(dead.pid)).mkdir(parents=True)
    (base / str(dead.pid) / "counter_1.db").write_bytes(b"old")
    live = base / str(os.getppid())  # pytest's parent: alive for the whole test
    live.mkdir()
    own = base / str(os.getpid())
    own.mkdir()
    (own / "counter_9.db").write_bytes(b"left by an earlier process with this PID")
    (base / "notes").mkdir()

    env = metrics.multiprocess_env(MetricsSettings(multiproc_dir=base), os.getpid())

    assert env == {"PROMETHEUS_MULTIPROC_DIR": str(own)}
    assert own.is_dir() and not any(own.iterdir())
    assert not (base / str(dead.pid)).exists()
    assert live.is_dir() and (base / "notes").is_dir()


def test_pid_exists_asks_the_kernel_with_signal_0(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert metrics._pid_exists(os.getpid()) is True
    assert metrics._pid_exists(dead.pid) is False
    assert metrics._pid_exists(2**70) is False

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(metrics.os, "kill", refused)
    assert metrics._pid_exists(12345) is True, "another user's process is running"


def test_this_process_is_not_in_multiprocess_mode() -> None:
    """The test process imported prometheus_client without the variable; only children
    started with it are (next test)."""
    assert metrics.multiprocess_active() is False
    metrics.process_exited(os.getpid())  # a no-op outside multiprocess mode


# -- multiprocess: real processes, one folder ------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    from tagger import metrics
    from tagger.schemas import Status, TagResult
    assert metrics.multiprocess_active()
    version, tagged = sys.argv[1], int(sys.argv[2])
    metrics.record_analyzers({"classify": version})
    metrics.record_results([TagResult(ref=str(i), status=Status.TAGGED) for i in range(tagged)])
    metrics.record_results([TagResult(ref="x", status=Status.FAILED, error="corrupt")])
    metrics.observe_task("done", 0.5)
    with metrics.time_analyzer("classify"):
        pass
    print(os.getpid())
    """
)

PARENT = textwrap.dedent(
    """
    import sys
    from prometheus_client import generate_latest
    from tagger import metrics
    assert metrics.multiprocess_active()
    for pid in sys.argv[1:]:
        metrics.process_exited(int(pid))
    sys.stdout.write(generate_latest(metrics.exposition_registry()).decode())
    """
)


@pytest.fixture
def multiproc_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    folder = tmp_path / "mp"
    folder.mkdir()
    yield {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}


def run(script: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counts_of_separate_processes_add_up_and_a_dead_ones_versions_go(
    multiproc_env: dict[str, str],
) -> None:
    first = int(run(CHILD, multiproc_env, "v1", "3"))
    second = int(run(CHILD, multiproc_env, "v2", "4"))
    folder = Path(multiproc_env["PROMETHEUS_MULTIPROC_DIR"])
    assert {f"counter_{first}.db", f"counter_{second}.db"} <= {p.name for p in folder.iterdir()}

    merged = parse(run(PARENT, multiproc_env))
    photos = {
        (labels["status"], labels["error"]): value
        for labels, value in merged["tagger_photos_total"]
    }
    assert photos == {("tagged", "none"): 7.0, ("failed", "corrupt"): 2.0}
    assert dict(
        (labels["outcome"], value) for labels, value in merged["tagger_task_seconds_count"]
    ) == {"done": 2.0}
    assert merged["tagger_task_seconds_sum"] == [({"outcome": "done"}, 1.0)]
    assert merged["tagger_analyzer_seconds_count"] == [({"analyzer": "classify"}, 2.0)]
    versions = {labels["version"] for labels, _ in merged["tagger_analyzer_info"]}
    assert versions == {"v1", "v2"}

    # the first process is gone: its live gauge (its versions) goes, its counts stay
    after = parse(run(PARENT, multiproc_env, str(first)))
    assert after["tagger_analyzer_info"] == [({"name": "classify", "version": "v2"}, 1.0)]
    assert not (folder / f"gauge_livemax_{first}.db").exists()
    assert ({"status": "tagged", "error": "none"}, 7.0) in after["tagger_photos_total"]
