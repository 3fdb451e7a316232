"""The vector index behind similar and recommend, on sqlite-vec and on pgvector: it must find
what exact search finds, honour every filter, and follow the photos it indexes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest
from alembic import command

from tagger.schemas import AnalyzerRun, Safety, Status, Tag, TagResult
from tagger.store import SearchFilters, SqlTagStore, make_engine
from tagger.store.schema import alembic_config, current_revision

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIMS = 96
GROUPS = ("dog", "cat", "car", "beach", "pizza", "tree")


def library(n: int, seed: int = 0) -> tuple[list[TagResult], npt.NDArray[np.float32]]:
    """Photos whose signatures mix a few group centres, like real ones (positive, clustered),
    each tagged with its main group, a person count and a safety score."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(len(GROUPS), DIMS)))
    weights = rng.dirichlet(np.full(len(GROUPS), 0.3), size=n)
    vectors = weights @ centres + rng.normal(scale=0.05, size=(n, DIMS))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    results = []
    for i in range(n):
        main = GROUPS[int(np.argmax(weights[i]))]
        results.append(
            TagResult(
                ref=f"s3://lib/{i:05d}.jpg",
                status=Status.TAGGED,
                etag="e",
                model_version="m",
                analyzers={"classify": AnalyzerRun(version="m", fields=["classes"])},
                tags=[Tag(name=main, score=float(weights[i].max()))],
                counts={"person": i % 4} if i % 4 else {},
                safety=Safety(nsfw=0.9 if i % 10 == 0 else 0.01),
                signature=vectors[i].tolist(),
                tagged_at=T0,
            )
        )
    return results, vectors


def exact(
    vectors: npt.NDArray[np.float32], query: int, k: int, keep: npt.NDArray[np.bool_] | None = None
) -> list[str]:
    scores = vectors.astype(np.float16).astype(np.float32) @ vectors[query]
    scores[query] = -np.inf
    if keep is not None:
        scores[~keep] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [f"s3://lib/{i:05d}.jpg" for i in order if np.isfinite(scores[i])]


def test_similar_finds_what_exact_search_finds(store: SqlTagStore) -> None:
    results, vectors = library(3000)
    store.save(results)
    assert store.index_stats().vectors == 3000
    recalls = []
    for query in range(0, 3000, 150):
        hits = store.similar(results[query].ref, k=10)
        truth = exact(vectors, query, 10)
        recalls.append(len({h.ref for h in hits} & set(truth)) / 10)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        expected = float(vectors[int(hits[0].ref[-9:-4])] @ vectors[query])
        assert hits[0].score == pytest.approx(expected, abs=3e-3)
        assert hits[0].why[0].kind == "similarity"
    assert np.mean(recalls) >= 0.95, recalls


def test_filters_hold_for_every_hit(store: SqlTagStore) -> None:
    results, vectors = library(2000, seed=1)
    store.save(results)
    by_ref = {r.ref: r for r in results}
    query = results[7].ref
    safe = store.similar(query, k=30, filters=SearchFilters(max_nsfw=0.5))
    assert len(safe) == 30 and all(by_ref[h.ref].nsfw == 0.01 for h in safe)
    crowd = store.similar(query, k=10, filters=SearchFilters(min_people=2, max_people=2))
    assert len(crowd) == 10 and all(by_ref[h.ref].counts == {"person": 2} for h in crowd)
    # a selective filter is answered exactly: the same hits as exact search over the subset
    keep = np.array([r.tags[0].name == "pizza" for r in results])
    pizza = store.similar(query, k=10, filters=SearchFilters(tags=("pizza",)))
    assert [h.ref for h in pizza] == exact(vectors, 7, 10, keep)
    nobody = store.similar(query, k=10, filters=SearchFilters(min_people=0, max_people=0))
    assert nobody and all(not by_ref[h.ref].counts for h in nobody)


def test_the_index_follows_saves_and_failures(store: SqlTagStore) -> None:
    results, _ = library(200, seed=2)
    store.save(results)
    twin = results[1].model_copy(update={"ref": "s3://lib/twin.jpg"})
    store.save([twin])
    assert store.similar(results[1].ref, k=1)[0].ref == "s3://lib/twin.jpg"
    store.save(
        [
            TagResult(
                ref="s3://lib/twin.jpg",
                status=Status.FAILED,
                reason="gone",
                error="not_found",
                tagged_at=T0,
            )
        ]
    )
    assert store.index_stats().vectors == 200
    assert "s3://lib/twin.jpg" not in {h.ref for h in store.similar(results[1].ref, k=50)}


def test_a_retag_with_the_same_signature_keeps_its_index_entry(store: SqlTagStore) -> None:
    """A new label set re-saves photos whose signature did not change: the entry stays (it is
    not re-computed), and a changed signature still moves it."""
    results, _ = library(50, seed=3)
    store.save(results)
    relabelled = results[7].model_copy(
        update={"tags": [*results[7].tags, Tag(name="suv", score=0.9, parents=["cars"])]}
    )
    store.save([relabelled])
    assert store.index_stats().vectors == 50
    assert results[7].ref in {h.ref for h in store.similar(results[8].ref, k=49)}
    moved = results[7].model_copy(update={"signature": results[20].signature})
    store.save([moved])
    assert store.similar(results[20].ref, k=1)[0].ref == results[7].ref


def test_existing_tags_names_what_photos_have(store: SqlTagStore) -> None:
    results, _ = library(60, seed=3)
    store.save(results)
    assert store.existing_tags(["Dog", "sunset", "pizza"]) == {"dog", "pizza"}


def test_upgrading_a_store_with_signatures_indexes_them(store_url: str) -> None:
    results, vectors = library(300, seed=4)
    with SqlTagStore(store_url) as store:
        store.save(results)
    # back to revision 0003: the signatures stay in photos, the vector index is gone
    engine = make_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0003")
        assert current_revision(conn) == "0003"
    engine.dispose()
    with SqlTagStore(store_url) as store:
        assert store.index_stats().vectors == 300
        hits = store.similar(results[5].ref, k=5)
        assert [h.ref for h in hits] == exact(vectors, 5, 5)
