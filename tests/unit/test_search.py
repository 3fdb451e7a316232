"""Text search, similar and recommend as the client and CLI see them, over a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tagger.schemas import AnalyzerRun, Colours, ColourShare, Status, Tag, TagResult
from tagger.search import NothingToSearch, Searcher
from tagger.store import SearchFilters, SqlTagStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def photo(
    ref: str,
    tags: dict[str, float],
    vector: np.ndarray,
    *,
    colour: str | None = None,
    people: int = 0,
) -> TagResult:
    parents = {"car": ["vehicle"], "dog": ["animal"], "beach": ["place"]}
    shown = [Tag(name=n, score=s, parents=parents.get(n, [])) for n, s in tags.items()]
    if colour:
        shown.append(Tag(name=colour, score=0.6, parents=["colour"]))
    if people:
        shown.append(Tag(name="person", score=0.9))
    unit = vector / np.linalg.norm(vector)
    return TagResult(
        ref=ref,
        status=Status.TAGGED,
        etag="e",
        model_version="m",
        analyzers={"classify": AnalyzerRun(version="m", fields=["classes"])},
        tags=shown,
        counts={"person": people} if people else {},
        colours=Colours(
            photo=[ColourShare(name=colour or "grey", fraction=1.0)],
            subject=[ColourShare(name=colour or "grey", fraction=1.0)],
        ),
        signature=unit.tolist(),
        tagged_at=T0,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqlTagStore:
    return SqlTagStore(f"sqlite:///{tmp_path / 'tags.db'}")


def test_a_text_query_binds_colours_and_reports_unknown_words(store: SqlTagStore) -> None:
    rng = np.random.default_rng(0)
    store.save(
        [
            photo("blue-car-beach", {"car": 0.8, "beach": 0.5}, rng.random(8), colour="blue"),
            photo("red-car-beach", {"car": 0.9, "beach": 0.6}, rng.random(8), colour="red"),
            photo("blue-car-road", {"car": 0.9}, rng.random(8), colour="blue"),
            photo("blue-dog-beach", {"dog": 0.9, "beach": 0.7}, rng.random(8), colour="blue"),
        ]
    )
    searcher = Searcher(store)
    found = searcher.text("a blue car by the beach at sunset")
    assert [hit.ref for hit in found.hits] == ["blue-car-beach"]
    assert found.unknown == ["sunset"] and found.colours == ["blue"]
    why = {(m.kind, m.name) for m in found.hits[0].why}
    assert {("tag", "car"), ("colour", "blue")} <= why
    # synonyms and plurals through the vocabulary
    assert {h.ref for h in searcher.text("automobiles").hits} == {
        "blue-car-beach",
        "red-car-beach",
        "blue-car-road",
    }
    with pytest.raises(NothingToSearch, match="sunset"):
        searcher.text("the sunset")


def test_people_counts_and_stored_words_are_searchable(store: SqlTagStore) -> None:
    rng = np.random.default_rng(1)
    store.save(
        [
            photo("pair", {"dog": 0.5}, rng.random(8), people=2),
            photo("crowd", {"dog": 0.5}, rng.random(8), people=7),
            photo("shop", {"bakery": 0.4, "bread": 0.9}, rng.random(8)),
        ]
    )
    searcher = Searcher(store)
    two = searcher.text("two people")
    assert [hit.ref for hit in two.hits] == ["pair"] and two.people == 2
    # "bread" read by OCR is a stored tag: a word the vocabulary may not list still matches
    assert [hit.ref for hit in searcher.text("bread").hits] == ["shop"]


def test_recommend_diversifies_and_leaves_out_what_was_seen(store: SqlTagStore) -> None:
    rng = np.random.default_rng(2)
    dog, beach = rng.random(16), rng.random(16)
    dogs = [photo(f"dog{i}", {"dog": 0.9}, dog + rng.normal(0, 0.01, 16)) for i in range(30)]
    beaches = [
        photo(f"beach{i}", {"beach": 0.9}, beach + rng.normal(0, 0.01, 16)) for i in range(30)
    ]
    mixed = [
        photo(f"mixed{i}", {"dog": 0.5}, 0.8 * dog + 0.2 * beach + rng.normal(0, 0.2, 16))
        for i in range(30)
    ]
    store.save([*dogs, *beaches, *mixed])
    searcher = Searcher(store)
    focused = searcher.recommend(["dog0"], k=10, exclude=["dog1"], diversity=0.0)
    refs = [hit.ref for hit in focused.hits]
    assert all(ref.startswith("dog") for ref in refs) and {"dog0", "dog1"}.isdisjoint(refs)
    varied = searcher.recommend(["dog0"], k=10, diversity=0.5)
    kinds = {hit.ref.rstrip("0123456789") for hit in varied.hits}
    assert len(kinds) >= 2, [hit.ref for hit in varied.hits]
    both = searcher.recommend(["dog0", "beach0", "never-tagged"], k=10, diversity=0.3)
    assert both.missing == ["never-tagged"]
    assert {h.ref[:3] for h in both.hits} >= {"dog", "bea"}
    safe_only = searcher.recommend(["dog0"], k=5, filters=SearchFilters(tags=("beach",)))
    assert all(hit.ref.startswith("beach") for hit in safe_only.hits)
