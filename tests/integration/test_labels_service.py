"""Custom labels in the fleet: a label set trained on a laptop, pushed to S3, pulled and applied
by a real worker started with ``TAGGER_LABELSETS=brand@<version>``; then the nightly backfill
with ``--retag-outdated`` brings photos tagged before it up to date."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mypy_boto3_s3 import S3Client

from tagger.backfill import BackfillOptions, Target, current_versions, hold_lock, run_backfill
from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.model.labelset import LabelSet, LabelSetSpec, find_local
from tagger.model.labelset_remote import RemoteLabelSets
from tagger.schemas import TagResult
from tagger.sources import make_s3_client
from tests.integration.services import CeleryWorker


def test_a_worker_pulls_the_pinned_label_set_from_s3_and_backfill_applies_it(
    service_settings: Settings,
    moto_s3: S3Client,
    start_worker: Callable[..., CeleryWorker],
    brand_labelset: LabelSet,
    logo_photos: dict[str, Path],
    tmp_path: Path,
) -> None:
    moto_s3.create_bucket(Bucket="models")
    moto_s3.create_bucket(Bucket="shop")
    uri = "s3://models/labelsets"
    pushed = RemoteLabelSets(make_s3_client(service_settings), uri).push(brand_labelset)
    assert pushed == f"{uri}/brand/{brand_labelset.version}/"

    photos = sorted((logo_photos["test"] / "branded").iterdir())[:4]
    photos += sorted((logo_photos["test"] / "plain").iterdir())[:4]
    refs = []
    for path in photos:
        moto_s3.put_object(Bucket="shop", Key=f"p/{path.name}", Body=path.read_bytes())
        refs.append(f"s3://shop/p/{path.name}")

    plain_settings = service_settings.model_copy(
        update={"analyzers": ["classify", "labels"], "labelsets_dir": tmp_path / "none"}
    )
    first = start_worker(plain_settings)
    with TaggerClient(plain_settings) as client:
        assert client.submit(refs).wait(timeout=180).done == len(refs)
        assert all("labels" not in client.tags(ref).analyzers for ref in refs)  # type: ignore[union-attr]
    first.stop()

    # a fresh worker with an empty label set folder, pinned to the pushed version
    worker_dir = tmp_path / "worker-labelsets"
    fleet = plain_settings.model_copy(
        update={
            "labelsets": [f"brand@{brand_labelset.version}"],
            "labelsets_uri": uri,
            "labelsets_dir": worker_dir,
        }
    )
    start_worker(fleet)
    target = Target.parse("s3://shop/p/")
    with TaggerClient(fleet) as client, hold_lock(fleet, target) as lease:
        assert current_versions(fleet)["labels"] == brand_labelset.spec
        summary = run_backfill(
            fleet, target, client.store, client, BackfillOptions(retag_outdated=True), lease=lease
        )
        assert (summary.listed, summary.outdated, summary.submitted) == (8, 8, 8)
        results = _wait_for_labels(client, refs)
    pulled = find_local(worker_dir, LabelSetSpec(name="brand", version=brand_labelset.version))
    assert pulled is not None and pulled.version == brand_labelset.version
    for result in results:
        assert result.analyzers["labels"].version == brand_labelset.spec
        assert result.analyzers["classify"].version == results[0].analyzers["classify"].version
    branded = [r for r in results if any(t.parents == ["brand"] for t in r.tags)]
    assert branded, "no photo got a brand tag"
    wrong = [
        r.ref
        for r in branded
        for t in r.tags
        if t.parents == ["brand"] and (t.name == "branded") != ("branded" in r.ref)
    ]
    assert len(wrong) <= 1, wrong


def _wait_for_labels(
    client: TaggerClient, refs: list[str], timeout: float = 180
) -> list[TagResult]:
    """The backfill's jobs finish in the worker; poll the store until every photo has them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [client.tags(ref) for ref in refs]
        results = [r for r in found if r is not None and "labels" in r.analyzers]
        if len(results) == len(refs):
            return results
        assert time.monotonic() < deadline, "the worker did not apply the label set"
        time.sleep(0.5)
