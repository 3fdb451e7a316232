"""``tagger serve`` against the real service: a real Celery worker tags photos from moto S3
into PostgreSQL (thumbnails beside the sidecars), and everything is asked over HTTP with
bearer tokens, the way a service in another language would."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tagger.config import ApiSettings, ApiToken, S3Settings, Settings
from tests.integration.services import ApiServer, CeleryWorker

pytestmark = pytest.mark.integration

READ = "read-only-token-for-tests"
SUBMIT = "submit-token-for-the-tests"


@pytest.fixture
def api_settings(service_settings: Settings) -> Settings:
    return service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(update={"results_prefix": "s3://api-results/t"}),
            "api": ApiSettings(
                tokens=[
                    ApiToken(name="search-service", token=READ, scopes=["read"]),
                    ApiToken(name="uploader", token=SUBMIT, scopes=["read", "submit"]),
                ]
            ),
        }
    )


@pytest.fixture
def api_server(api_settings: Settings, tmp_path: Path) -> Iterator[str]:
    server = ApiServer(api_settings, tmp_path / "serve.log")
    try:
        yield server.start()
    finally:
        server.stop()


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = http.get(f"/v1/jobs/{job_id}").json()["counts"]
        if counts["finished"]:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished: {counts}")


def test_the_api_submits_follows_and_reads_what_real_workers_tagged(
    api_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    photos_with_mirrored_cat: dict[str, bytes],
    api_server: str,
) -> None:
    s3 = moto_s3
    for bucket in ("api-photos", "api-results"):
        s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    for name, data in photos_with_mirrored_cat.items():
        s3.put_object(Bucket="api-photos", Key=f"{name}.jpg", Body=data)  # type: ignore[attr-defined]
    s3.put_object(Bucket="api-photos", Key="bad.jpg", Body=b"<html>not a photo</html>")  # type: ignore[attr-defined]
    refs = [f"s3://api-photos/{name}.jpg" for name in photos_with_mirrored_cat]
    start_worker(api_settings)
    reader = httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {READ}"})
    uploader = httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {SUBMIT}"})
    anonymous = httpx.Client(base_url=api_server)
    try:
        assert anonymous.get("/readyz").json() == {"ready": True, "broker": "ok", "store": "ok"}
        assert anonymous.get("/v1/facets").status_code == 401
        body = {"refs": [*refs, "s3://api-photos/bad.jpg"]}
        assert reader.post("/v1/jobs", json=body).status_code == 403

        created = uploader.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["total"] == len(refs) + 1
        counts = wait_for_job(reader, job["id"])
        assert (counts["done"], counts["failed"], counts["queued"]) == (len(refs), 1, 0)

        cat = reader.get("/v1/photos", params={"ref": "s3://api-photos/chelsea.jpg"}).json()
        assert cat["status"] == "tagged"
        assert "cat" in [t["name"] for t in cat["tags"]]

        thumb = reader.get("/v1/photos/thumbnail", params={"ref": "s3://api-photos/chelsea.jpg"})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        image = Image.open(io.BytesIO(thumb.content))
        assert image.format == "WEBP"
        assert max(image.size) == min(api_settings.thumbnails.side, cat["width"])

        found = reader.get("/v1/search", params={"q": "a cat"}).json()
        assert {h["ref"] for h in found["items"]} == {
            "s3://api-photos/chelsea.jpg",
            "s3://api-photos/mirrored-cat.jpg",
        }
        similar = reader.get(
            "/v1/similar", params={"ref": "s3://api-photos/chelsea.jpg", "limit": 2}
        ).json()
        assert similar["items"][0]["ref"] == "s3://api-photos/mirrored-cat.jpg"
        assert similar["next"]
        rest = reader.get(
            "/v1/similar",
            params={"ref": "s3://api-photos/chelsea.jpg", "limit": 2, "cursor": similar["next"]},
        ).json()
        assert not {h["ref"] for h in rest["items"]} & {h["ref"] for h in similar["items"]}

        liked = reader.post(
            "/v1/recommend", json={"liked": ["s3://api-photos/chelsea.jpg"], "k": 2}
        ).json()
        assert liked["hits"][0]["ref"] == "s3://api-photos/mirrored-cat.jpg"

        failures = reader.get("/v1/failures").json()["items"]
        assert [(f["ref"], f["error"]) for f in failures] == [
            ("s3://api-photos/bad.jpg", "not_an_image")
        ]
        facets = reader.get("/v1/facets").json()
        assert facets["total"] == len(refs)
        assert any(f["name"] == "person" for f in facets["tags"])
    finally:
        for client in (reader, uploader, anonymous):
            client.close()


def test_readyz_says_which_dependency_is_down(service_settings: Settings, tmp_path: Path) -> None:
    broken = service_settings.model_copy(
        update={
            "worker": service_settings.worker.model_copy(
                update={"broker_url": "redis://127.0.0.1:1/0"}
            ),
            "s3": S3Settings(),
        }
    )
    server = ApiServer(broken, tmp_path / "serve.log")
    url = server.start()
    try:
        answer = httpx.get(f"{url}/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json() == {"ready": False, "broker": "unreachable", "store": "ok"}
        submitted = httpx.post(f"{url}/v1/jobs", json={"refs": ["s3://b/k.jpg"]}, timeout=30)
        assert submitted.status_code == 503
        assert submitted.json()["code"] == "broker_unavailable"
    finally:
        server.stop()
