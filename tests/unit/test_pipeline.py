"""The one tagging flow, on real photos and the real model, in-process."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.config import Settings
from tagger.pipeline import Pipeline, content_tag, tag_and_store
from tagger.schemas import Status, TagResult
from tagger.sources import Fetcher
from tagger.store import PhotoState, SqlTagStore
from tagger.thumbnails import FileThumbnailStore, ThumbnailStoreError
from tests.conftest import jpeg_bytes


@pytest.fixture
def pipeline(settings: Settings) -> Pipeline:
    with Pipeline.from_settings(settings, allow_local_paths=True) as built:
        yield built


def test_chelsea_is_a_cat_and_an_animal(
    pipeline: Pipeline,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    paths = write_photos(sample_photos)
    results = {Path(r.ref).stem: r for r in pipeline.tag_batch([str(p) for p in paths.values()])}
    chelsea = results["chelsea"]
    assert chelsea.status == Status.TAGGED
    assert chelsea.tags[0].name == "cat" and chelsea.tags[0].parents == ["animal"]
    assert {"cat", "animal"} <= set(chelsea.tag_names())
    assert chelsea.classes[0].label in {"tabby", "tiger cat", "Egyptian cat"}
    assert len(chelsea.classes) == 5
    assert (chelsea.width, chelsea.height) == (451, 300)
    assert chelsea.model_version == pipeline.model_version
    assert chelsea.etag == content_tag(sample_photos["chelsea"])
    assert "coffee" in results["coffee"].tag_names()
    assert "drink" in results["coffee"].tag_names()


def test_one_bad_photo_does_not_fail_its_batch(
    pipeline: Pipeline,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    tmp_path: Path,
) -> None:
    paths = write_photos(
        {
            "chelsea": sample_photos["chelsea"],
            "page.jpg": b"<html><body>not a photo</body></html>",
            "cut.jpg": sample_photos["coffee"][:400],
            "empty.jpg": b"",
        }
    )
    refs = [str(p) for p in paths.values()] + [str(tmp_path / "missing.jpg"), "ftp://x/y.jpg"]
    results = pipeline.tag_batch(refs)
    assert [r.status for r in results] == [Status.TAGGED] + [Status.FAILED] * 5
    errors = [r.error for r in results[1:]]
    assert errors == ["not_an_image", "truncated", "empty", "not_found", "invalid_ref"]
    assert all(r.reason and "\n" not in r.reason for r in results[1:])
    assert not any(r.transient for r in results)


def test_a_photo_already_tagged_with_the_same_content_is_skipped(
    pipeline: Pipeline,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    path = str(write_photos({"chelsea": sample_photos["chelsea"]})["chelsea"])
    current = PhotoState(
        status=Status.TAGGED,
        etag=content_tag(sample_photos["chelsea"]),
        model_version=pipeline.model_version,
        analyzers=pipeline.versions,
    )
    assert pipeline.tag_batch([path], {path: current})[0].status == Status.SKIPPED
    older = current.model_copy(update={"analyzers": {**pipeline.versions, "classify": "older"}})
    assert pipeline.tag_batch([path], {path: older})[0].status == Status.TAGGED
    changed = current.model_copy(update={"etag": "sha256:other"})
    assert pipeline.tag_batch([path], {path: changed})[0].status == Status.TAGGED


def test_stream_keeps_every_photo_in_order(
    pipeline: Pipeline,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    paths = write_photos({f"p{i}": sample_photos["rocket"] for i in range(7)})
    refs = [str(p) for p in paths.values()]
    batches = list(pipeline.tag_stream(refs, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [r.ref for b in batches for r in b] == refs


def test_local_paths_are_refused_where_not_allowed(
    settings: Settings, sample_photos: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(sample_photos["chelsea"])
    with Pipeline.from_settings(settings) as worker_side:
        result = worker_side.tag_batch([str(path)])[0]
    assert result.status == Status.FAILED and result.error == "refused"


def test_the_default_analysers_find_the_astronaut_colours_and_a_safety_score(
    pipeline: Pipeline,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    paths = write_photos(sample_photos)
    results = {Path(r.ref).stem: r for r in pipeline.tag_batch([str(p) for p in paths.values()])}
    astronaut = results["astronaut"]
    assert set(astronaut.analyzers) == {"classify", "objects", "colours", "safety"}
    assert "person" in astronaut.tag_names()
    assert astronaut.counts is not None and astronaut.counts["person"] >= 1
    person = next(o for o in astronaut.objects or [] if o.label == "person")
    assert person.box[0] < 0.1 and person.box[2] > 0.55  # she fills the left of the photo
    assert astronaut.safety is not None and astronaut.safety.nsfw < 0.2
    assert "nsfw" not in astronaut.tag_names()
    chelsea = results["chelsea"]
    assert chelsea.colours is not None
    assert chelsea.colours.subject[0].name in {"brown", "orange"}
    assert {"cat", "animal"} <= set(chelsea.tag_names())
    assert chelsea.counts == {"cat": 1}
    # every analyser's own part is kept with its version, and the merged tags come from them
    for name, run in chelsea.analyzers.items():
        assert run.version == pipeline.versions[name]
    assert {t.name for t in chelsea.analyzers["colours"].tags} <= set(chelsea.tag_names())
    assert chelsea.analyzers["classify"].fields == ["classes", "signature"]
    assert chelsea.signature is not None and "signature" not in chelsea.model_dump()


# -- thumbnails ------------------------------------------------------------------------------


class RecordingThumbnails:
    """A thumbnail store that keeps what it is given and notes which photos the tag store
    already held at that moment (a saved result must have its thumbnail)."""

    def __init__(self, tag_store: SqlTagStore | None = None, broken: Exception | None = None):
        self.tag_store = tag_store
        self.broken = broken
        self.written: dict[str, bytes] = {}
        self.saved_before: list[str] = []

    def put(self, identity: str, data: bytes) -> None:
        self.put_many({identity: data})

    def get(self, identity: str) -> bytes | None:
        return self.written.get(identity)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        if self.broken is not None:
            raise self.broken
        if self.tag_store is not None:
            self.saved_before.extend(self.tag_store.known(list(items)))
        self.written.update(items)


def test_tag_and_store_writes_a_thumbnail_per_tagged_photo_before_saving_it(
    pipeline: Pipeline,
    settings: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
) -> None:
    from skimage import data

    big = Image.fromarray(data.astronaut()).resize((4000, 3000), Image.Resampling.BILINEAR)
    paths = write_photos(
        {
            "chelsea": sample_photos["chelsea"],
            "coffee": sample_photos["coffee"],
            "big": jpeg_bytes(np.asarray(big)),
            # drafted at 1/8 for the analysers this would be 300x300: asked for more
            "square": jpeg_bytes(np.asarray(big.crop((800, 300, 3200, 2700)))),
            "page.jpg": b"<html>not a photo</html>",
            "cut.jpg": sample_photos["rocket"][:400],
        }
    )
    refs = [str(p) for p in paths.values()]
    store = SqlTagStore.from_settings(settings)
    thumbnails = RecordingThumbnails(store)
    results = [
        r
        for batch in tag_and_store(pipeline, store, refs, thumbnails=thumbnails)
        for r in batch.results
    ]
    assert [r.status for r in results] == [Status.TAGGED] * 4 + [Status.FAILED] * 2
    assert set(thumbnails.written) == set(refs[:4])
    assert thumbnails.saved_before == []
    sizes = {}
    for ref in refs[:4]:
        image = Image.open(io.BytesIO(thumbnails.written[ref]))
        assert image.format == "WEBP"
        sizes[Path(ref).stem] = image.size
    # long side 384, from decodes large enough for it (never enlarged from a small draft)
    assert sizes == {
        "chelsea": (384, 255),
        "coffee": (384, 256),
        "big": (384, 288),
        "square": (384, 384),
    }
    # a second run skips every photo: no thumbnail is made again
    again = RecordingThumbnails()
    skipped = [
        r
        for batch in tag_and_store(pipeline, store, refs[:4], thumbnails=again)
        for r in batch.results
    ]
    assert {r.status for r in skipped} == {Status.SKIPPED} and again.written == {}
    store.close()


@pytest.mark.parametrize(
    "broken", [ThumbnailStoreError({"any": "EndpointConnectionError"}), RuntimeError("down")]
)
def test_a_failing_thumbnail_store_loses_no_photo(
    pipeline: Pipeline,
    settings: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    caplog: pytest.LogCaptureFixture,
    broken: Exception,
) -> None:
    paths = write_photos({name: sample_photos[name] for name in ("chelsea", "rocket")})
    refs = [str(p) for p in paths.values()]
    store = SqlTagStore.from_settings(settings)
    with caplog.at_level(logging.WARNING, logger="tagger.pipeline"):
        batches = list(
            tag_and_store(pipeline, store, refs, thumbnails=RecordingThumbnails(broken=broken))
        )
    assert [r.status for b in batches for r in b.results] == [Status.TAGGED] * 2
    assert all(not b.retry for b in batches)
    saved = store.get_many(refs)
    assert {ref: r.status for ref, r in saved.items()} == dict.fromkeys(refs, Status.TAGGED)
    assert "cat" in saved[refs[0]].tag_names()
    warnings = [r for r in caplog.records if r.getMessage() == "thumbnail write failed"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    store.close()


def test_a_photo_re_tagged_without_its_pixels_keeps_its_thumbnail(
    tmp_path: Path, write_photos: Callable[[dict[str, bytes]], dict[str, Path]]
) -> None:
    """A label set's head reads the stored embedding: no decode, so no new thumbnail, and
    the one made when the photo was first tagged stays."""
    from tests.unit.test_analysis_flow import Counting, photo_bytes

    settings = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "models")
    refs = [str(p) for p in write_photos({"a": photo_bytes(800, 600)}).values()]
    store = SqlTagStore.from_settings(settings)
    files = FileThumbnailStore(tmp_path / "thumbnails")

    def run(*analyzers: Counting) -> list[TagResult]:
        fetcher = Fetcher(settings, allow_local_paths=True)
        with Pipeline(settings, list(analyzers), fetcher) as pipeline:
            batches = tag_and_store(pipeline, store, refs, thumbnails=files)
            return [r for batch in batches for r in batch.results]

    assert run(Counting("classify", 224, "c1"))[0].status is Status.TAGGED
    first = files.get(refs[0])
    assert first is not None and Image.open(io.BytesIO(first)).size == (384, 288)
    files.put(refs[0], b"the first thumbnail")
    head = Counting("labels", 0, "l1")
    assert run(Counting("classify", 224, "c1"), head)[0].status is Status.TAGGED
    assert head.prepared_from == [] and head.batches == [1]  # no pixels were read
    assert files.get(refs[0]) == b"the first thumbnail"
    store.close()
