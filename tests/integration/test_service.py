"""The service end to end: client → Redis → real Celery worker processes → PostgreSQL."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tagger.analyzers.registry import enabled_names
from tagger.client import InvalidReference, TaggerClient
from tagger.config import FetchSettings, Settings
from tagger.schemas import Status
from tests.integration.services import CeleryWorker

pytestmark = pytest.mark.integration


def photo(seed: int, size: int = 96) -> bytes:
    """A small distinct JPEG per seed: smooth colour fields, so each photo's content (and
    ETag) differs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def upload(s3: object, bucket: str, count: int, prefix: str = "p") -> list[str]:
    s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    keys = [f"{prefix}/{i:04d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda ik: s3.put_object(Bucket=bucket, Key=ik[1], Body=photo(ik[0])),
                enumerate(keys),
            )
        )  # type: ignore[attr-defined]
    return [f"s3://{bucket}/{key}" for key in keys]


def test_two_hundred_photos_from_s3_are_tagged_once(
    service_settings: Settings, moto_s3: object, start_worker: Callable[..., CeleryWorker]
) -> None:
    refs = upload(moto_s3, "bulk-photos", 200)
    start_worker(service_settings, concurrency=2)
    with TaggerClient(service_settings) as client:
        job = client.submit(refs)
        counts = job.wait(timeout=300)
        assert (counts.done, counts.failed, counts.total) == (200, 0, 200)
        store = client.store
        results = store.get_many(refs)
        assert len(results) == 200
        assert all(
            r.status == Status.TAGGED and len(r.classes) == 5 and r.etag for r in results.values()
        )
        first_times = {ref: r.tagged_at for ref, r in results.items()}

        again = client.submit(refs).wait(timeout=300)
        assert (again.skipped, again.done, again.failed) == (200, 0, 0)
        assert {ref: r.tagged_at for ref, r in store.get_many(refs).items()} == first_times


def test_bad_photos_fail_alone(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
) -> None:
    moto_s3.create_bucket(Bucket="mixed")  # type: ignore[attr-defined]
    moto_s3.put_object(Bucket="mixed", Key="cat.jpg", Body=sample_photos["chelsea"])  # type: ignore[attr-defined]
    moto_s3.put_object(Bucket="mixed", Key="broken.jpg", Body=sample_photos["chelsea"][:300])  # type: ignore[attr-defined]
    moto_s3.put_object(Bucket="mixed", Key="page.jpg", Body=b"<!doctype html><html></html>")  # type: ignore[attr-defined]
    quarter = sample_photos["coffee"][: len(sample_photos["coffee"]) // 4] + b"\xff\xd9"
    moto_s3.put_object(Bucket="mixed", Key="cut.jpg", Body=quarter)  # type: ignore[attr-defined]
    refs = [
        "s3://mixed/cut.jpg",
        "s3://mixed/cat.jpg",
        "s3://mixed/broken.jpg",
        "s3://mixed/page.jpg",
        "s3://mixed/missing.jpg",
        "https://127.0.0.1:9/metadata.jpg",
        "https://169.254.169.254/latest/meta-data/x.jpg",
    ]
    start_worker(service_settings)
    with TaggerClient(service_settings) as client:
        counts = client.submit(refs).wait(timeout=120)
        assert (counts.done, counts.failed) == (1, 6)
        cat = client.tags("s3://mixed/cat.jpg")
        assert cat is not None and "cat" in cat.tag_names() and "animal" in cat.tag_names()
        failures = {r.ref: r for r in client.failures()}
        assert failures["s3://mixed/broken.jpg"].error in ("corrupt", "truncated")
        # a quarter of a JPEG with an end marker appended is not tagged from grey pixels
        assert failures["s3://mixed/cut.jpg"].error == "truncated"
        assert not any(r.transient for r in failures.values()), "bad input is never retried"
        assert failures["s3://mixed/page.jpg"].error == "not_an_image"
        assert failures["s3://mixed/missing.jpg"].error == "not_found"
        for private in refs[5:]:
            assert failures[private].error == "refused", failures[private].reason
        assert client.search(["cat"])[0].ref == "s3://mixed/cat.jpg"


def test_an_invalid_reference_enqueues_nothing(service_settings: Settings) -> None:
    with TaggerClient(service_settings) as client:
        with pytest.raises(InvalidReference, match=r"ftp://x/y\.jpg"):
            client.submit(["s3://ok/a.jpg", "ftp://x/y.jpg"])
        assert client.queue_depth() == 0


def test_an_s3_outage_is_retried_until_everything_is_tagged(
    service_settings: Settings,
    spawn_moto_server: Callable[[], object],
    start_worker: Callable[..., CeleryWorker],
    tmp_path: object,
) -> None:
    import boto3

    server = spawn_moto_server()
    endpoint = server.endpoint  # type: ignore[attr-defined]
    settings = service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(
                update={"endpoint_url": endpoint, "max_attempts": 1}
            ),
            "fetch": FetchSettings(connect_timeout=0.5, read_timeout=2.0, total_timeout=10.0),
        }
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    refs = upload(s3, "outage", 48)
    worker = start_worker(settings)
    with TaggerClient(settings) as client:
        server.pause()  # type: ignore[attr-defined]
        job = client.submit(refs, batch_size=8)
        deadline = time.monotonic() + 120
        while "Retry in" not in worker.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Retry in" in worker.log_path.read_text(), "the worker never saw the outage"
        assert job.status().done == 0
        server.resume()  # type: ignore[attr-defined]
        counts = job.wait(timeout=180)
        assert (counts.done, counts.failed) == (48, 0)


def test_results_are_written_back_to_s3_when_enabled(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
) -> None:
    import json

    s3 = moto_s3
    s3.create_bucket(Bucket="wb-photos")  # type: ignore[attr-defined]
    s3.create_bucket(Bucket="wb-results")  # type: ignore[attr-defined]
    s3.put_object(  # type: ignore[attr-defined]
        Bucket="wb-photos",
        Key="2026/chelsea.jpg",
        Body=sample_photos["chelsea"],
        Tagging="owner=alice",
    )
    settings = service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(
                update={"results_prefix": "s3://wb-results/tags", "write_object_tags": True}
            )
        }
    )
    start_worker(settings)
    with TaggerClient(settings) as client:
        assert client.submit(["s3://wb-photos/2026/chelsea.jpg"]).wait(timeout=120).done == 1
    sidecar = s3.get_object(Bucket="wb-results", Key="tags/wb-photos/2026/chelsea.jpg.json")  # type: ignore[attr-defined]
    body = json.loads(sidecar["Body"].read())
    assert body["ref"] == "s3://wb-photos/2026/chelsea.jpg" and body["tags"][0]["name"] == "cat"
    tags = s3.get_object_tagging(Bucket="wb-photos", Key="2026/chelsea.jpg")["TagSet"]  # type: ignore[attr-defined]
    as_dict = {tag["Key"]: tag["Value"] for tag in tags}
    assert as_dict["owner"] == "alice", "the owner's own tag must survive"
    assert "tagger:cat" in as_dict and "tagger:animal" in as_dict
    assert len(tags) <= 10


def test_every_analyser_reaches_the_store_the_client_and_the_s3_sidecar(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
) -> None:
    import json

    s3 = moto_s3
    s3.create_bucket(Bucket="an-photos")  # type: ignore[attr-defined]
    s3.create_bucket(Bucket="an-results")  # type: ignore[attr-defined]
    for name in ("astronaut", "chelsea"):
        s3.put_object(Bucket="an-photos", Key=f"{name}.jpg", Body=sample_photos[name])  # type: ignore[attr-defined]
    refs = ["s3://an-photos/astronaut.jpg", "s3://an-photos/chelsea.jpg"]
    settings = service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(update={"results_prefix": "s3://an-results/t"})
        }
    )
    # the defaults; `labels` is among them but runs only while a label set is active
    assert enabled_names(settings) == ["classify", "objects", "colours", "safety"]
    start_worker(settings)
    with TaggerClient(settings) as client:
        assert client.submit(refs).wait(timeout=180).done == 2
        astronaut, chelsea = (client.tags(ref) for ref in refs)
        assert astronaut is not None and chelsea is not None
        assert "person" in astronaut.tag_names() and astronaut.counts == {"person": 1}
        assert astronaut.safety is not None and astronaut.colours is not None
        assert chelsea.counts == {"cat": 1} and "cat" in chelsea.tag_names()
        assert set(chelsea.analyzers) == {"classify", "objects", "colours", "safety"}
        assert [hit.ref for hit in client.search(["person"])] == [refs[0]]
        # moderation: flagged at the astronaut's own score, and then left out of safe search
        assert client.flagged() == []
        flagged = client.flagged(threshold=astronaut.safety.nsfw)
        assert refs[0] in [r.ref for r in flagged]
    sidecar = s3.get_object(Bucket="an-results", Key="t/an-photos/astronaut.jpg.json")  # type: ignore[attr-defined]
    body = json.loads(sidecar["Body"].read())
    assert body["counts"] == {"person": 1} and body["objects"][0]["label"] == "person"
    assert body["safety"]["nsfw"] == astronaut.safety.nsfw
    assert body["colours"]["subject"] and set(body["analyzers"]) == set(astronaut.analyzers)


def test_retag_outdated_runs_only_the_new_analysers_on_the_whole_bucket(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
) -> None:
    from tagger.backfill import BackfillOptions, Target, current_versions, hold_lock, run_backfill

    s3 = moto_s3
    s3.create_bucket(Bucket="old-photos")  # type: ignore[attr-defined]
    for name, data in sample_photos.items():
        s3.put_object(Bucket="old-photos", Key=f"p/{name}.jpg", Body=data)  # type: ignore[attr-defined]
    refs = [f"s3://old-photos/p/{name}.jpg" for name in sample_photos]
    classify_only = service_settings.model_copy(update={"analyzers": ["classify"]})
    first = start_worker(classify_only)
    with TaggerClient(classify_only) as client:
        assert client.submit(refs).wait(timeout=180).done == len(refs)
        before = client.store.get_many(refs)
    first.stop()

    target = Target.parse("s3://old-photos/p/")

    def backfill(**options: bool) -> object:
        with TaggerClient(service_settings) as client, hold_lock(service_settings, target) as lease:
            return run_backfill(
                service_settings, target, client.store, client, BackfillOptions(**options),
                lease=lease,
            )  # fmt: skip

    plain = backfill()
    assert (plain.listed, plain.outdated, plain.submitted) == (len(refs), len(refs), 0)  # type: ignore[attr-defined]
    start_worker(service_settings)
    retag = backfill(retag_outdated=True)
    assert retag.submitted == len(refs)  # type: ignore[attr-defined]
    with TaggerClient(service_settings) as client:
        deadline = time.monotonic() + 180
        versions = current_versions(service_settings)
        after = client.store.get_many(refs)
        while time.monotonic() < deadline and any(
            r.analyzer_versions() != versions for r in after.values()
        ):
            time.sleep(0.5)
            after = client.store.get_many(refs)
    for ref in refs:
        assert after[ref].analyzer_versions() == versions
        # the classifier's part is the first run's, kept and not re-run
        assert after[ref].analyzers["classify"] == before[ref].analyzers["classify"]
        assert after[ref].classes == before[ref].classes
    assert backfill(retag_outdated=True).submitted == 0  # type: ignore[attr-defined]
