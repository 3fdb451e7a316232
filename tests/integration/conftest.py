"""Real servers for integration tests: a moto S3 server in its own process on a loopback port.

A separate process (not moto's in-process decorator) so botocore goes through real sockets,
real HTTP and real error responses, exactly as it would against S3 or MinIO.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from tagger.config import FetchSettings, S3Settings, Settings, StoreSettings, WorkerSettings
from tagger_dev.devservers import CeleryWorker, MotoServer, RedisServer
from tests.pg import PgServer, temporary_schema

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server shared by the whole test session; tests keep to
    their own buckets (use a unique name) since state is shared."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def spawn_moto_server(tmp_path: Path) -> Iterator[Callable[[], MotoServer]]:
    """Start extra moto servers a test may stop itself (e.g. to see an outage); any still
    running at the end of the test are stopped."""
    started: list[MotoServer] = []

    def spawn() -> MotoServer:
        server = MotoServer(tmp_path)
        server.start()
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials in boto3's default chain, and nothing else it could fall back to."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def settings_for(endpoint: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        fetch=FetchSettings(connect_timeout=2.0, read_timeout=5.0, total_timeout=30.0),
        s3=S3Settings(
            endpoint_url=endpoint, region=REGION, addressing_style="path", max_attempts=2
        ),
    )


@pytest.fixture
def s3_settings(moto_server: str, aws_credentials: None, tmp_path: Path) -> Settings:
    """Settings whose S3 client talks to the session's moto server."""
    return settings_for(moto_server, tmp_path)


@pytest.fixture
def moto_s3(s3_settings: Settings) -> Iterator[S3Client]:
    """A plain boto3 client on the moto server, for arranging buckets and objects."""
    client = boto3.client(
        "s3", endpoint_url=s3_settings.s3.endpoint_url, region_name=s3_settings.s3.region
    )
    yield client
    client.close()


# -- the service: redis-server, PostgreSQL, Celery workers ----------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the session; tests keep apart by their own queue names."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def store_url(pg_server: PgServer) -> Iterator[str]:
    """The production store, PostgreSQL with pgvector, in a fresh schema."""
    with temporary_schema(pg_server) as url:
        yield url


@pytest.fixture
def service_settings(
    s3_settings: Settings, redis_server: str, store_url: str, model_dir: Path, artifact: object
) -> Settings:
    """Settings for the whole service: moto S3, private Redis, PostgreSQL, the built model and
    a queue of this test's own; every fault-handling setting is the product's default."""
    queue = f"tagger-{uuid.uuid4().hex[:8]}"
    return s3_settings.model_copy(
        update={
            "model_dir": model_dir,
            "store": StoreSettings(url=store_url),
            "worker": WorkerSettings(
                broker_url=f"{redis_server}/0",
                queue=queue,
                batch_size=16,
            ),
        }
    )


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """Start real ``celery worker`` processes; all are stopped (by PID) after the test."""
    started: list[CeleryWorker] = []

    def start(settings: Settings, **kwargs: object) -> CeleryWorker:
        index = len(started)
        worker = CeleryWorker(
            settings,
            tmp_path / f"worker-{index}.log",
            name=f"w{index}",
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
