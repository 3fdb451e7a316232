"""The one tagging flow, on real photos and the real model, in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.config import Settings
from tagger.pipeline import Pipeline, content_tag
from tagger.schemas import Status
from tagger.store import PhotoState


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
