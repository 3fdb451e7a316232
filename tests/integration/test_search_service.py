"""Search, similar and recommend through the fleet: a real worker tags photos from moto S3
into PostgreSQL, writing their signatures to pgvector, and the client reads them back."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text

from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.store import make_engine
from tests.integration.services import CeleryWorker


def test_workers_fill_pgvector_and_the_client_searches_it(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    photos_with_mirrored_cat: dict[str, bytes],
) -> None:
    s3 = moto_s3
    s3.create_bucket(Bucket="lib")  # type: ignore[attr-defined]
    photos = photos_with_mirrored_cat
    for name, data in photos.items():
        s3.put_object(Bucket="lib", Key=f"{name}.jpg", Body=data)  # type: ignore[attr-defined]
    refs = {name: f"s3://lib/{name}.jpg" for name in photos}
    start_worker(service_settings)
    with TaggerClient(service_settings) as client:
        assert client.submit(list(refs.values())).wait(timeout=180).done == len(refs)
        engine = make_engine(service_settings.store_url)
        with engine.connect() as conn:
            indexed = conn.execute(text("SELECT ref, dims FROM photo_vectors")).all()
        engine.dispose()
        assert {row.ref for row in indexed} == set(refs.values())
        assert {row.dims for row in indexed} == {len(client.tags(refs["chelsea"]).signature)}  # type: ignore[union-attr]

        nearest = client.similar(refs["chelsea"], k=3)
        assert nearest[0].ref == refs["mirrored-cat"] and len(nearest) == 3

        cats = client.search_text("cats")
        assert {hit.ref for hit in cats.hits} == {refs["chelsea"], refs["mirrored-cat"]}
        assert cats.unknown == [] and any(m.name == "cat" for m in cats.hits[0].why)
        people = client.search_text("a man under the sunset")
        assert [hit.ref for hit in people.hits] == [refs["astronaut"]]
        assert people.unknown == ["sunset"]

        liked = client.recommend([refs["chelsea"]], k=3, exclude=[refs["coffee"]])
        shown = [hit.ref for hit in liked.hits]
        assert shown[0] == refs["mirrored-cat"]
        assert refs["chelsea"] not in shown and refs["coffee"] not in shown
