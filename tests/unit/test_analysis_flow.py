"""How the pipeline runs analysers, with counting stand-ins for the models: one decode per
photo at the largest size asked, batched analysis, partial re-runs, and failures kept to the
photos they concern."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger.config import Settings
from tagger.errors import ConfigError
from tagger.pipeline import Pipeline, content_tag
from tagger.schemas import Findings, Status, Tag, TagResult
from tagger.sources import Fetcher
from tagger.store import PhotoState


class Counting:
    """An analyser that records the image sizes it was prepared from and the batches it ran."""

    def __init__(
        self,
        name: str,
        min_side: int,
        version: str = "1",
        reads: tuple[str, ...] = (),
        broken: bool = False,
    ) -> None:
        self.name, self.min_side, self.version, self.reads = name, min_side, version, reads
        self.broken = broken
        self.prepared_from: list[tuple[int, int]] = []
        self.batches: list[int] = []
        self.seen_context: list[set[str]] = []

    def prepare(self, image: Image.Image) -> tuple[int, int]:
        self.prepared_from.append(image.size)
        return image.size

    def analyse(
        self, prepared: Sequence[Any], context: Sequence[Mapping[str, Findings]]
    ) -> list[Findings]:
        if self.broken:
            raise RuntimeError("model exploded")
        self.batches.append(len(prepared))
        self.seen_context.extend(set(found) for found in context)
        return [
            Findings(
                tags=[Tag(name=f"{self.name}-tag", score=0.5), Tag(name="shared", score=0.4)],
                counts={self.name: len(prepared)} if self.name == "objects" else None,
                text=[self.version] if self.name == "text" else None,
            )
            for _ in prepared
        ]

    def warm_up(self) -> None:
        pass


def photo_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path: Path) -> list[str]:
    paths = []
    for index in range(5):
        path = tmp_path / f"p{index}.jpg"
        path.write_bytes(photo_bytes(1600, 1200))
        paths.append(str(path))
    return paths


def make(tmp_path: Path, *analyzers: Counting) -> Pipeline:
    settings = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "models", batch_size=4)
    return Pipeline(settings, list(analyzers), Fetcher(settings, allow_local_paths=True))


def test_each_photo_is_decoded_once_at_the_largest_size_any_analyser_needs(
    tmp_path: Path, photos: list[str]
) -> None:
    small, large = Counting("colours", 64), Counting("objects", 300)
    with make(tmp_path, large, small) as pipeline:
        results = [r for batch in pipeline.tag_stream(photos) for r in batch]
    assert all(r.status is Status.TAGGED for r in results)
    # a 1600x1200 JPEG decodes at 1/4 scale (400x300): the shorter side still >= 300, and both
    # analysers were prepared from that same picture
    assert large.prepared_from == small.prepared_from == [(400, 300)] * 5
    assert large.batches == small.batches == [4, 1]


def test_a_result_merges_the_analysers_tags_and_records_each_version(
    tmp_path: Path, photos: list[str]
) -> None:
    with make(tmp_path, Counting("classify", 224, "c1"), Counting("objects", 300, "o1")) as p:
        result = p.tag_batch(photos[:1])[0]
    assert [t.name for t in result.tags] == ["classify-tag", "objects-tag", "shared"]
    assert result.analyzer_versions() == {"classify": "c1", "objects": "o1"}
    assert result.counts == {"objects": 1}
    assert result.model_version == p.model_version != "c1"


def test_only_outdated_analysers_re_run_and_readers_of_them_too(
    tmp_path: Path, photos: list[str]
) -> None:
    first = [Counting("classify", 224, "c1"), Counting("objects", 300, "o1")]
    first.append(Counting("colours", 64, "k1", reads=("objects",)))
    first.append(Counting("safety", 256, "s1"))
    with make(tmp_path, *first) as pipeline:
        before = {r.ref: r for r in pipeline.tag_batch(photos)}
    # a new detector: objects re-runs, colours reads its boxes so it re-runs, the others not
    second = [Counting("classify", 224, "c1"), Counting("objects", 300, "o2")]
    second.append(Counting("colours", 64, "k1", reads=("objects",)))
    second.append(Counting("safety", 256, "s1"))
    known = {
        ref: PhotoState(
            status=r.status, etag=r.etag, model_version=r.model_version,
            analyzers=r.analyzer_versions(),
        )
        for ref, r in before.items()
    }  # fmt: skip
    with make(tmp_path, *second) as pipeline:
        after = pipeline.tag_batch(photos, known, before)
    classify, objects, colours, safety = second
    assert classify.batches == safety.batches == []
    assert objects.batches == colours.batches == [5]
    assert all(context == {"classify", "safety", "objects"} for context in colours.seen_context)
    assert all(r.analyzer_versions()["objects"] == "o2" for r in after)
    assert all(r.analyzer_versions()["classify"] == "c1" for r in after)
    # what was kept is what the first run found
    for result in after:
        assert result.analyzers["classify"] == before[result.ref].analyzers["classify"]
        assert "classify-tag" in result.tag_names()


def test_a_photo_whose_content_changed_runs_every_analyser(
    tmp_path: Path, photos: list[str]
) -> None:
    with make(tmp_path, Counting("classify", 224, "c1")) as pipeline:
        stored = pipeline.tag_batch(photos[:1])[0]
    replaced = stored.model_copy(update={"etag": "sha256:something-else"})
    classify, objects = Counting("classify", 224, "c1"), Counting("objects", 300, "o1")
    with make(tmp_path, classify, objects) as pipeline:
        pipeline.tag_batch(photos[:1], {}, {stored.ref: replaced})
    assert classify.batches == [1] and objects.batches == [1]


def test_a_current_photo_is_skipped_before_any_analyser(tmp_path: Path, photos: list[str]) -> None:
    classify = Counting("classify", 224, "c1")
    data = Path(photos[0]).read_bytes()
    state = PhotoState(
        status=Status.TAGGED, etag=content_tag(data), analyzers={"classify": "c1", "text": "t9"}
    )
    with make(tmp_path, classify) as pipeline:
        result = pipeline.tag_batch(photos[:1], {photos[0]: state})[0]
    # findings of an analyser that is no longer enabled do not make a photo outdated
    assert result.status is Status.SKIPPED and classify.prepared_from == []


def test_a_failing_analyser_fails_its_photos_with_a_reason_and_nothing_else(
    tmp_path: Path, photos: list[str]
) -> None:
    good = Counting("classify", 224)
    with make(tmp_path, good, Counting("objects", 300, broken=True)) as pipeline:
        results = pipeline.tag_batch([*photos[:2], str(tmp_path / "missing.jpg")])
    assert [r.status for r in results] == [Status.FAILED] * 3
    assert [r.error for r in results] == ["internal", "internal", "not_found"]
    assert results[0].reason == "internal error: RuntimeError"


def test_no_analyser_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="no analyser"):
        Pipeline(settings, [], Fetcher(settings))


def test_findings_of_a_result_round_trip() -> None:
    result = TagResult.merged(
        {
            "objects": Findings(tags=[Tag(name="dog", score=0.8)], objects=[], counts={}),
            "classify": Findings(tags=[Tag(name="dog", score=0.9, parents=["animal"])]),
        },
        {"objects": "o1", "classify": "c1"},
        ref="r",
        status=Status.TAGGED,
    )
    assert [(t.name, t.score, t.parents) for t in result.tags] == [("dog", 0.9, ["animal"])]
    again = TagResult.model_validate_json(result.model_dump_json())
    assert again.findings_of("objects") == Findings(
        tags=[Tag(name="dog", score=0.8)], objects=[], counts={}
    )
    assert again.outdated({"objects": "o2", "classify": "c1", "safety": "s1"}) == [
        "objects",
        "safety",
    ]
