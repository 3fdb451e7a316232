"""The service under faults, with the product's default fault settings: nothing lost, nothing
stuck, nothing tagged twice.

Each test runs real processes — redis-server, `tagger worker` processes, a moto S3 server,
PostgreSQL — and breaks one of them the way production breaks: the database refuses
connections, a worker's whole process group is SIGKILLed, Redis restarts while retries wait.
Recovery times are printed (run with ``-s`` or see ``-rA``) for the figures in the README.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tagger.client import TaggerClient
from tagger.config import Settings, StoreSettings
from tagger.schemas import Status
from tagger.store import SqlTagStore
from tests.integration.services import CeleryWorker, MotoServer, RedisServer
from tests.integration.test_service import upload
from tests.pg import PgServer

pytestmark = pytest.mark.integration


def batch_lines(*workers: CeleryWorker) -> list[dict[str, object]]:
    """The workers' JSON "batch done" log lines."""
    lines = []
    for worker in workers:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if '"batch done"' in line:
                lines.append(json.loads(line))
    return lines


def tagged_count(*workers: CeleryWorker) -> int:
    """How many photos the workers inferred and saved in all: equal to the number of photos
    when each was tagged exactly once."""
    return sum(int(str(line["tagged"])) for line in batch_lines(*workers))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


# -- PostgreSQL refuses connections ---------------------------------------------------------


@contextmanager
def own_database(server: PgServer) -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A database of the test's own, and a switch that closes it to every connection
    (``ALLOW_CONNECTIONS false`` plus terminating its backends) and opens it again."""
    name = f"tagger_fault_{uuid.uuid4().hex[:10]}"
    admin = server.admin()

    def allow(open_: bool) -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(open_).lower()}')
        if not open_:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name), allow
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_a_20s_postgresql_outage_loses_nothing(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    pg_server: PgServer,
) -> None:
    refs = upload(moto_s3, "pg-outage", 160)
    with own_database(pg_server) as (url, allow):
        settings = service_settings.model_copy(update={"store": StoreSettings(url=url)})
        workers = [start_worker(settings), start_worker(settings)]
        with TaggerClient(settings) as client:
            job = client.submit(refs)
            wait_for(lambda: job.status().done >= 32, 120, "first photos tagged")
            allow(False)
            outage_started = time.monotonic()
            wait_for(
                lambda: any("store unavailable" in w.log_path.read_text() for w in workers),
                60,
                "a worker saw the outage",
            )
            time.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))
            allow(True)
            reopened = time.monotonic()
            counts = job.wait(timeout=300)
            recovered = time.monotonic() - reopened
        assert (counts.done, counts.failed, counts.queued) == (160, 0, 0)
        with SqlTagStore(url) as store:
            results = store.get_many(refs)
        assert len(results) == 160 and all(r.status == Status.TAGGED for r in results.values())
        assert tagged_count(*workers) == 160, "a photo was inferred and saved twice"
        print(f"\nPostgreSQL 20 s outage: all 160 tagged {recovered:.1f} s after it ended")


def test_a_locked_sqlite_store_is_waited_for(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    tmp_path: Path,
) -> None:
    database = tmp_path / "locked.db"
    settings = service_settings.model_copy(
        update={"store": StoreSettings(url=f"sqlite:///{database}")}
    )
    refs = upload(moto_s3, "sqlite-locked", 48)
    SqlTagStore(settings.store_url).counts()  # create the schema before the lock is taken
    worker = start_worker(settings)
    with TaggerClient(settings) as client:
        job = client.submit(refs)
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(12)
        lock.execute("ROLLBACK")
        lock.close()
        counts = job.wait(timeout=180)
    assert (counts.done, counts.failed) == (48, 0)
    assert tagged_count(worker) == 48


# -- a worker SIGKILLed mid-batch -------------------------------------------------------------


def test_a_killed_workers_batch_is_back_within_60s(
    service_settings: Settings, moto_s3: object, start_worker: Callable[..., CeleryWorker]
) -> None:
    refs = upload(moto_s3, "sigkill", 256)
    store = SqlTagStore(service_settings.store_url)
    victim = start_worker(service_settings)
    survivor = start_worker(service_settings)
    with TaggerClient(service_settings) as client:
        job = client.submit(refs, batch_size=64)  # four batches for two workers
        wait_for(lambda: "received" in victim.log_path.read_text(), 60, "the victim took a batch")
        assert not batch_lines(victim), "the victim finished its batch before it could be killed"
        victim.kill()
        killed = time.monotonic()
        saved_before = store.counts()["tagged"]
        counts = job.wait(timeout=120)
        back = time.monotonic() - killed
    assert tagged_count(survivor) == 256 - saved_before, "photos saved before the kill re-tagged"
    assert counts.done + counts.skipped == 256 and counts.failed == 0
    assert back < 60, f"the killed worker's batch took {back:.1f}s to finish"
    results = store.get_many(refs)
    assert len(results) == 256 and all(r.status == Status.TAGGED for r in results.values())
    store.close()
    print(f"\nwhole worker SIGKILLed: its batch finished {back:.1f} s after the kill")


# -- Redis restarts while retries wait --------------------------------------------------------


def test_a_redis_restart_with_retries_pending_loses_nothing(
    service_settings: Settings,
    spawn_moto_server: Callable[[], MotoServer],
    start_worker: Callable[..., CeleryWorker],
    tmp_path: Path,
) -> None:
    import boto3

    broker = RedisServer(tmp_path / "redis", persistent=True)
    (tmp_path / "redis").mkdir()
    broker.start()
    server = spawn_moto_server()
    settings = service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(
                update={"endpoint_url": server.endpoint, "max_attempts": 1}
            ),
            "fetch": service_settings.fetch.model_copy(
                update={"connect_timeout": 0.5, "read_timeout": 1.0, "total_timeout": 5.0}
            ),
            "worker": service_settings.worker.model_copy(update={"broker_url": broker.url}),
        }
    )
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    refs = upload(s3, "redis-restart", 64)
    workers = [start_worker(settings), start_worker(settings)]
    try:
        with TaggerClient(settings) as client:
            server.pause()  # S3 frozen: every photo fails transiently and waits for a retry
            job = client.submit(refs)
            wait_for(
                lambda: sum("Retry in" in w.log_path.read_text() for w in workers) == 2,
                120,
                "both workers hold retries",
            )
            broker.restart(down_for=10)
            server.resume()
            resumed = time.monotonic()
            counts = job.wait(timeout=240)
            recovered = time.monotonic() - resumed
        assert (counts.done, counts.failed) == (64, 0)
        for worker in workers:
            assert worker.process is not None and worker.process.poll() is None, (
                f"a worker died: {worker.log_path.read_text()[-2000:]}"
            )
        print(f"\nRedis restarted (10 s down) with retries pending: all tagged {recovered:.1f} s")
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


# -- a loopback photo server: slow answers, presigned URLs ------------------------------------


class PhotoServer:
    """Serves one JPEG at any path on a loopback port, counting requests per path and
    answering after ``delay`` seconds."""

    def __init__(self, body: bytes, delay: float = 0.0) -> None:
        import http.server
        import threading

        self.requests: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests[path] = server.requests.get(path, 0) + 1
                time.sleep(delay)
                if path.startswith("/missing"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def http_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "fetch": settings.fetch.model_copy(
                update={
                    "allow_http": True,
                    "allow_private_addresses": True,
                    "read_timeout": 60.0,
                    "total_timeout": 120.0,
                }
            )
        }
    )


def test_a_task_longer_than_the_visibility_timeout_runs_once(
    service_settings: Settings, start_worker: Callable[..., CeleryWorker]
) -> None:
    from tests.integration.test_service import photo

    # A short timeout and sweep, so the test need not outlast the default 30 s: the renewal
    # works the same at any timeout.
    quick = {"visibility_timeout": 9, "unacked_restore_interval": 1}
    settings = http_settings(service_settings)
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=quick)})
    timeout = settings.worker.visibility_timeout
    server = PhotoServer(photo(7), delay=timeout + 12)
    workers = [start_worker(settings), start_worker(settings)]
    try:
        with TaggerClient(settings) as client:
            job = client.submit([f"{server.url}/slow.jpg"])
            counts = job.wait(timeout=timeout + 90)
        assert counts.done == 1
        assert server.requests == {"/slow.jpg": 1}, "a second worker took the running task"
        assert tagged_count(*workers) == 1
    finally:
        server.close()


def test_no_signature_reaches_the_logs_or_the_store(
    service_settings: Settings, start_worker: Callable[..., CeleryWorker]
) -> None:
    from tests.integration.test_service import photo

    secret = f"PLANTED{uuid.uuid4().hex}"
    server = PhotoServer(photo(11))
    settings = http_settings(service_settings)
    worker = start_worker(settings)
    query = (
        f"w=640&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA{secret}%2Fus-east-1"
        f"&X-Amz-Signature={secret}&X-Amz-Expires=300"
    )
    ref = f"{server.url}/presigned.jpg?{query}"
    missing = f"{server.url}/missing.jpg?sig={secret}&token={secret}"
    try:
        with TaggerClient(settings) as client:
            job = client.submit([ref, missing])
            counts = job.wait(timeout=120)
            assert (counts.done, counts.failed) == (1, 1)
            result = client.tags(ref)
            assert result is not None and result.status == Status.TAGGED
            assert result.ref == f"{server.url}/presigned.jpg?w=640"
    finally:
        server.close()
    assert server.requests["/presigned.jpg"] == 1
    logs = worker.log_path.read_text(errors="replace")
    assert "presigned.jpg" in logs, "the task was logged"
    assert secret not in logs
    dumped = dump_tables(settings.store_url)
    assert "presigned.jpg" in dumped
    assert secret not in dumped


def dump_tables(url: str) -> str:
    """Every row of every table of the store, as text."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                repr(row) for table in meta.sorted_tables for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()
