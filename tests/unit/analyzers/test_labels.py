"""The ``labels`` analyser: a trained label set applied by the real pipeline, on top of the
classifier, and re-applied to stored photos from their embeddings without a decode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger.analyzers.labels import LabelsAnalyzer, resolve_labelsets
from tagger.analyzers.registry import enabled_names, installed_versions
from tagger.config import Settings
from tagger.errors import ConfigError
from tagger.model.labelset import LabelSet, LabelSetSpec, write_active
from tagger.pipeline import Pipeline, tag_and_store
from tagger.schemas import Status, TagResult
from tagger.search import Searcher
from tagger.store import SqlTagStore


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlTagStore]:
    found = SqlTagStore.from_settings(settings)
    yield found
    found.close()


def with_sets(settings: Settings, labelset: LabelSet, *specs: str) -> Settings:
    return settings.model_copy(
        update={
            "analyzers": ["classify", "labels"],
            "labelsets_dir": labelset.path.parent.parent,
            "labelsets": list(specs),
        }
    )


def photos(logo_photos: dict[str, Path], count: int) -> list[str]:
    held_out = logo_photos["test"]
    branded = sorted((held_out / "branded").iterdir())[:count]
    plain = sorted((held_out / "plain").iterdir())[:count]
    return [str(path) for path in branded + plain]


def brand_tags(result: TagResult) -> list[str]:
    return [tag.name for tag in result.tags if tag.parents == ["brand"]]


def test_labels_runs_only_while_a_set_is_active(
    settings: Settings, brand_labelset: LabelSet
) -> None:
    idle = with_sets(settings, brand_labelset)
    assert enabled_names(idle) == ["classify"]
    active = with_sets(settings, brand_labelset, "brand")
    assert enabled_names(active) == ["classify", "labels"]
    assert installed_versions(active)["labels"] == brand_labelset.spec
    # activation in the folder, when TAGGER_LABELSETS is unset
    folder = brand_labelset.path.parent.parent
    write_active(folder, [LabelSetSpec(name="brand", version=brand_labelset.version)])
    try:
        pinned = settings.model_copy(
            update={"analyzers": ["classify", "labels"], "labelsets_dir": folder}
        )
        assert [s.spec for s in resolve_labelsets(pinned)] == [brand_labelset.spec]
    finally:
        write_active(folder, [])
    unknown = with_sets(settings, brand_labelset, "cars@abcd1234")
    with pytest.raises(ConfigError, match="label set cars@abcd1234 is not in"):
        LabelsAnalyzer.create(unknown)
    orphan = active.model_copy(update={"analyzers": ["labels"]})
    with pytest.raises(ConfigError, match="enable classify"):
        enabled_names(orphan)


def test_a_new_label_set_reaches_stored_photos_without_a_decode(
    settings: Settings,
    store: SqlTagStore,
    brand_labelset: LabelSet,
    logo_photos: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refs = photos(logo_photos, 5)
    before = with_sets(settings, brand_labelset)
    with Pipeline.from_settings(before, allow_local_paths=True) as pipeline:
        first = [r for batch in tag_and_store(pipeline, store, refs) for r in batch.results]
    assert all(r.status is Status.TAGGED and not brand_tags(r) for r in first)

    after = with_sets(settings, brand_labelset, f"brand@{brand_labelset.version}")
    with Pipeline.from_settings(after, allow_local_paths=True) as pipeline:
        decodes: list[Any] = []
        original: Callable[..., Any] = pipeline.decoder.decode_into

        def counting(*args: Any, **kwargs: Any) -> Any:
            decodes.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(pipeline.decoder, "decode_into", counting)
        second = [r for batch in tag_and_store(pipeline, store, refs) for r in batch.results]
    assert decodes == []  # the head read the stored embeddings
    assert all(r.status is Status.TAGGED for r in second)
    by_ref = {r.ref: r for r in second}
    found = [brand_tags(by_ref[ref]) for ref in refs]
    truth = ["branded"] * 5 + ["plain"] * 5
    tagged = [(tags, want) for tags, want in zip(found, truth, strict=True) if tags]
    assert len(tagged) >= 5, found  # thresholds are set for precision, so some stay untagged
    assert sum(tags == [want] for tags, want in tagged) >= 0.8 * len(tagged), found
    # the same tags as a full run from the pixels (the stored float16 embedding is enough)
    with Pipeline.from_settings(after, allow_local_paths=True) as pipeline:
        fresh = {r.ref: r for batch in pipeline.tag_stream(refs) for r in batch}
    thresholds = brand_labelset.manifest.thresholds
    for ref in refs:
        stored_tags = {t.name: t.score for t in by_ref[ref].tags if t.parents == ["brand"]}
        fresh_tags = {t.name: t.score for t in fresh[ref].tags if t.parents == ["brand"]}
        for name in stored_tags.keys() | fresh_tags.keys():
            score = stored_tags.get(name, fresh_tags.get(name, 0.0))
            if name in stored_tags and name in fresh_tags:
                assert abs(stored_tags[name] - fresh_tags[name]) < 0.01
            else:  # only a score at the threshold may fall either side
                assert abs(score - thresholds[name]) < 0.02, (ref, stored_tags, fresh_tags)
    stored = store.get_many(refs)
    for ref in refs:
        result = stored[ref]
        assert result.analyzer_versions()["labels"] == brand_labelset.spec
        # the classifier's findings were kept, not recomputed or lost
        assert result.classes == {r.ref: r for r in first}[ref].classes
        assert result.signature is not None
    # the custom tags are searchable like any tag, by text too
    found_by_text = Searcher(store).text("branded", limit=20)
    expected = {ref for ref, tags in zip(refs, found, strict=True) if tags == ["branded"]}
    assert {hit.ref for hit in found_by_text.hits} == expected and found_by_text.unknown == []
    # and now everything is current: a third run skips every photo
    with Pipeline.from_settings(after, allow_local_paths=True) as pipeline:
        third = [r for batch in tag_and_store(pipeline, store, refs) for r in batch.results]
    assert {r.status for r in third} == {Status.SKIPPED}


def test_a_head_refuses_another_backbone(
    settings: Settings, brand_labelset: LabelSet, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "sets" / "brand" / brand_labelset.version
    shutil.copytree(brand_labelset.path, copy)
    manifest = brand_labelset.manifest.model_copy(deep=True)
    manifest.backbone.version = "0" * 16
    (copy / "manifest.json").write_text(manifest.model_dump_json())
    wrong = settings.model_copy(update={"labelsets_dir": tmp_path / "sets", "labelsets": ["brand"]})
    with pytest.raises(Exception, match="retrain it"):
        LabelsAnalyzer.create(wrong)
