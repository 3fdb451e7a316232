"""SqlTagStore behaviour, each test on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from tagger.config import Settings, StoreSettings
from tagger.schemas import AnalyzerRun, ClassScore, JobCounts, Safety, Status, Tag, TagResult
from tagger.store import PhotoState, SearchFilters, SqlTagStore, TagStore
from tagger.store import sql as sql_module

MODEL = "v1-abc123"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def tagged(
    ref: str,
    tags: dict[str, float],
    *,
    parents: dict[str, list[str]] | None = None,
    classes: list[ClassScore] | None = None,
    etag: str | None = "e1",
    model_version: str = MODEL,
    at: datetime = T0,
) -> TagResult:
    parents = parents or {}
    return TagResult(
        ref=ref,
        status=Status.TAGGED,
        etag=etag,
        model_version=model_version,
        analyzers={"classify": AnalyzerRun(version=model_version, fields=["classes"])},
        width=640,
        height=480,
        classes=classes or [],
        tags=[Tag(name=n, score=s, parents=parents.get(n, [])) for n, s in tags.items()],
        tagged_at=at,
    )


def failed(ref: str, *, at: datetime, error: str = "not_an_image") -> TagResult:
    return TagResult(
        ref=ref, status=Status.FAILED, reason=f"{ref}: cannot decode", error=error, tagged_at=at
    )


def hit_refs(store: SqlTagStore, *tags: str, limit: int = 50) -> list[str]:
    return [hit.ref for hit in store.search(tags, limit=limit)]


CAT = tagged(
    "s3://photos/cat.jpg",
    {"cat": 0.8, "sofa": 0.15},
    parents={"cat": ["pet", "animal"], "sofa": ["furniture"]},
    classes=[
        ClassScore(wnid="n02123045", label="tabby", score=0.55),
        ClassScore(wnid="n02123159", label="tiger cat", score=0.25),
        ClassScore(wnid="n04256520", label="studio couch", score=0.15),
    ],
)


def test_round_trip_keeps_classes_tags_and_parents(store: SqlTagStore) -> None:
    store.save([CAT])

    got = store.get(CAT.ref)

    assert got == CAT
    assert got is not None
    assert got.tagged_at.tzinfo is not None and got.tagged_at == T0
    assert got.tag_names() == ["cat", "sofa", "pet", "animal", "furniture"]
    assert store.get("s3://photos/missing.jpg") is None


def test_get_many_returns_known_refs_in_the_order_asked(store: SqlTagStore) -> None:
    dog = tagged("s3://photos/dog.jpg", {"dog": 0.9})
    store.save([CAT, dog])

    got = store.get_many([dog.ref, "s3://photos/missing.jpg", CAT.ref, dog.ref])

    assert list(got) == [dog.ref, CAT.ref]
    assert got[dog.ref] == dog and got[CAT.ref] == CAT


def test_store_reopened_on_the_same_url_sees_saved_results(
    store: SqlTagStore, open_store: Callable[[], SqlTagStore]
) -> None:
    store.save([CAT])
    store.close()

    assert open_store().get(CAT.ref) == CAT


def test_resave_replaces_the_old_tags(store: SqlTagStore) -> None:
    store.save([CAT])
    newer = tagged(
        CAT.ref,
        {"dog": 0.7},
        parents={"dog": ["animal"]},
        classes=[ClassScore(wnid="n02099601", label="golden retriever", score=0.7)],
        etag="e2",
        model_version="v2-def456",
        at=T0 + timedelta(days=1),
    )

    store.save([newer])

    assert store.get(CAT.ref) == newer
    for old_tag in ("cat", "sofa", "pet", "furniture", "tabby", "n02123045"):
        assert hit_refs(store, old_tag) == [], old_tag
    assert hit_refs(store, "dog") == [CAT.ref]
    assert hit_refs(store, "golden retriever") == [CAT.ref]
    assert store.search(["animal"])[0].score == pytest.approx(0.7)
    assert store.known([CAT.ref])[CAT.ref] == PhotoState(
        status=Status.TAGGED,
        etag="e2",
        model_version="v2-def456",
        analyzers={"classify": "v2-def456"},
    )


def test_a_failing_save_leaves_the_previous_result_untouched(
    store: SqlTagStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photo upsert, tag delete and tag insert are one transaction: when the insert fails,
    neither the new photo row nor the tag deletion may remain."""
    store.save([CAT])
    real_index_rows = sql_module._index_rows

    def broken_index_rows(result: TagResult) -> list[dict[str, Any]]:
        rows = real_index_rows(result)
        return [*rows, {**rows[0], "kind": "not-a-kind"}]  # violates the CHECK constraint

    monkeypatch.setattr(sql_module, "_index_rows", broken_index_rows)
    with pytest.raises(IntegrityError):
        store.save([tagged(CAT.ref, {"dog": 0.9}, etag="e2"), tagged("s3://p/new.jpg", {"x": 1})])
    monkeypatch.undo()

    assert store.get(CAT.ref) == CAT
    assert store.get("s3://p/new.jpg") is None
    assert hit_refs(store, "cat") == [CAT.ref]
    assert hit_refs(store, "dog") == []


def test_saving_a_ref_twice_in_one_batch_keeps_the_last(store: SqlTagStore) -> None:
    first = tagged("s3://p/a.jpg", {"cat": 0.9})
    last = tagged("s3://p/a.jpg", {"dog": 0.6}, etag="e9")

    store.save([first, last])

    assert store.get("s3://p/a.jpg") == last
    assert hit_refs(store, "cat") == []


def test_search_needs_all_tags_and_ranks_by_summed_score(store: SqlTagStore) -> None:
    store.save(
        [
            tagged("s3://p/a.jpg", {"cat": 0.9, "sofa": 0.5}),
            tagged("s3://p/b.jpg", {"cat": 0.6, "sofa": 0.7}),
            tagged("s3://p/c.jpg", {"cat": 0.95}),
            tagged("s3://p/d.jpg", {"sofa": 0.99, "lamp": 0.4}),
        ]
    )

    both = store.search(["cat", "sofa"])
    assert [h.ref for h in both] == ["s3://p/a.jpg", "s3://p/b.jpg"]
    assert [h.score for h in both] == pytest.approx([1.4, 1.3])
    assert hit_refs(store, "cat") == ["s3://p/c.jpg", "s3://p/a.jpg", "s3://p/b.jpg"]
    assert hit_refs(store, "cat", limit=2) == ["s3://p/c.jpg", "s3://p/a.jpg"]
    assert hit_refs(store, "cat", "sofa", "lamp") == []
    assert hit_refs(store, "  CAT ", "Sofa", "cat") == ["s3://p/a.jpg", "s3://p/b.jpg"]
    assert hit_refs(store, "giraffe") == []


def test_search_finds_photos_by_parent_tag_with_the_best_child_score(store: SqlTagStore) -> None:
    pets = tagged(
        "s3://p/pets.jpg",
        {"cat": 0.6, "dog": 0.3},
        parents={"cat": ["pet", "animal"], "dog": ["pet", "animal"]},
    )
    store.save([CAT, pets, tagged("s3://p/car.jpg", {"car": 0.9}, parents={"car": ["vehicle"]})])

    hits = store.search(["animal"])

    assert [h.ref for h in hits] == [CAT.ref, pets.ref]
    assert [h.score for h in hits] == pytest.approx([0.8, 0.6])
    assert hits[1].tags == ["cat", "dog", "pet", "animal"]
    assert hit_refs(store, "animal", "sofa") == [CAT.ref]
    assert hit_refs(store, "vehicle") == ["s3://p/car.jpg"]


def test_search_matches_class_labels_and_wordnet_ids(store: SqlTagStore) -> None:
    store.save([CAT])

    assert hit_refs(store, "tabby") == [CAT.ref]
    assert hit_refs(store, "Tiger Cat") == [CAT.ref]
    assert hit_refs(store, "n02123045") == [CAT.ref]
    assert store.search(["tabby"])[0].tags == CAT.tag_names()


def test_search_only_returns_tagged_photos(store: SqlTagStore) -> None:
    odd = TagResult(
        ref="s3://p/skipped.jpg",
        status=Status.SKIPPED,
        reason="duplicate",
        tags=[Tag(name="cat", score=0.99)],
    )
    store.save([CAT, odd])

    assert hit_refs(store, "cat") == [CAT.ref]


def test_search_refuses_an_empty_query(store: SqlTagStore) -> None:
    with pytest.raises(ValueError, match="tag"):
        store.search(["", "  "])


def test_failures_are_listed_most_recent_first(store: SqlTagStore) -> None:
    store.save(
        [
            failed("s3://p/old.jpg", at=T0),
            CAT,
            failed("s3://p/new.jpg", at=T0 + timedelta(hours=2), error="too_large"),
            failed("s3://p/mid.jpg", at=T0 + timedelta(hours=1)),
        ]
    )

    listed = store.failures()

    assert [r.ref for r in listed] == ["s3://p/new.jpg", "s3://p/mid.jpg", "s3://p/old.jpg"]
    assert listed[0].error == "too_large"
    assert listed[0].reason == "s3://p/new.jpg: cannot decode"
    assert [r.ref for r in store.failures(limit=1)] == ["s3://p/new.jpg"]


def test_known_reports_etag_model_version_and_status(store: SqlTagStore) -> None:
    store.save(
        [
            tagged("s3://p/a.jpg", {"cat": 0.9}, etag="ea"),
            tagged("s3://p/b.jpg", {"cat": 0.9}, etag=None, model_version="v0-old"),
            failed("s3://p/c.jpg", at=T0),
        ]
    )

    known = store.known(["s3://p/a.jpg", "s3://p/b.jpg", "s3://p/c.jpg", "s3://p/new.jpg"])

    current, old = {"classify": MODEL}, {"classify": "v0-old"}
    assert known == {
        "s3://p/a.jpg": PhotoState(
            status=Status.TAGGED, etag="ea", model_version=MODEL, analyzers=current
        ),
        "s3://p/b.jpg": PhotoState(
            status=Status.TAGGED, etag=None, model_version="v0-old", analyzers=old
        ),
        "s3://p/c.jpg": PhotoState(status=Status.FAILED),
    }
    assert known["s3://p/a.jpg"].is_tagged_by("ea", current)
    assert not known["s3://p/a.jpg"].is_tagged_by("changed", current)
    assert not known["s3://p/a.jpg"].is_tagged_by("ea", {"classify": "v2-newer"})
    assert not known["s3://p/a.jpg"].is_tagged_by("ea", {**current, "objects": "o1"})
    assert not known["s3://p/b.jpg"].is_tagged_by(None, old)
    assert not known["s3://p/c.jpg"].is_tagged_by(None, current)


def test_known_handles_listing_pages_larger_than_one_in_list(store: SqlTagStore) -> None:
    refs = [f"s3://p/{i:05d}.jpg" for i in range(1234)]
    store.save([tagged(ref, {"cat": 0.5}, etag=f"e{i}") for i, ref in enumerate(refs)])

    known = store.known([*refs, "s3://p/unknown.jpg"])

    assert len(known) == 1234
    assert known[refs[1000]].etag == "e1000"
    assert len(store.get_many(refs)) == 1234


def test_counts_photos_per_status(store: SqlTagStore) -> None:
    assert store.counts() == {"tagged": 0, "failed": 0, "skipped": 0}
    store.save([CAT, failed("s3://p/x.jpg", at=T0), failed("s3://p/y.jpg", at=T0)])

    assert store.counts() == {"tagged": 1, "failed": 2, "skipped": 0}


def test_job_counts_follow_the_items(store: SqlTagStore) -> None:
    refs = [f"s3://p/{i}.jpg" for i in range(5)]
    store.add_job("job-1", refs)
    store.add_job("job-2", refs[:2])

    assert store.job_counts("job-1") == JobCounts(total=5, queued=5, done=0, failed=0, skipped=0)

    store.mark_job_items("job-1", {refs[0]: "done", refs[1]: "done", refs[2]: "failed"})
    store.mark_job_items("job-1", {refs[3]: "skipped"})
    counts = store.job_counts("job-1")

    assert counts == JobCounts(total=5, queued=1, done=2, failed=1, skipped=1)
    assert not counts.finished
    assert store.job_counts("job-2").queued == 2
    store.mark_job_items("job-1", {refs[4]: "done"})
    assert store.job_counts("job-1").finished
    assert store.job_counts("no-such-job").total == 0


def test_adding_a_job_again_does_not_reset_marked_items(store: SqlTagStore) -> None:
    store.add_job("job", ["a", "b"])
    store.mark_job_items("job", {"a": "done"})

    store.add_job("job", ["a", "b", "c"])

    assert store.job_counts("job") == JobCounts(total=3, queued=2, done=1, failed=0, skipped=0)


def test_done_is_final_but_failed_can_still_succeed(store: SqlTagStore) -> None:
    store.add_job("job", ["a", "b"])
    store.mark_job_items("job", {"a": "done", "b": "failed"})

    store.mark_job_items("job", {"a": "skipped", "b": "done"})

    assert store.job_counts("job") == JobCounts(total=2, queued=0, done=2, failed=0, skipped=0)


def test_marking_an_item_the_client_has_not_registered_yet_counts_it(
    store: SqlTagStore,
) -> None:
    store.mark_job_items("job", {"a": "done"})
    store.add_job("job", ["a", "b"])

    assert store.job_counts("job") == JobCounts(total=2, queued=1, done=1, failed=0, skipped=0)


def test_unknown_job_item_state_is_refused(store: SqlTagStore) -> None:
    store.add_job("job", ["a"])
    with pytest.raises(ValueError, match="finished"):
        store.mark_job_items("job", {"a": "finished"})
    assert store.job_counts("job").queued == 1


def test_cursors_are_set_replaced_and_deleted(store: SqlTagStore) -> None:
    assert store.get_cursor("backfill:s3://photos/") is None

    store.set_cursor("backfill:s3://photos/", "2024/01/img-0001.jpg")
    store.set_cursor("backfill:s3://photos/", "2024/02/img-0042.jpg")
    store.set_cursor("other", "x")

    assert store.get_cursor("backfill:s3://photos/") == "2024/02/img-0042.jpg"
    store.set_cursor("backfill:s3://photos/", None)
    assert store.get_cursor("backfill:s3://photos/") is None
    assert store.get_cursor("other") == "x"
    store.set_cursor("never-set", None)


def test_concurrent_saves_from_two_threads_all_land(
    open_store: Callable[[], SqlTagStore],
) -> None:
    """Two writers (think: two worker processes) on one database, both creating the schema
    on first use and then saving batches as fast as they can."""
    stores = [open_store(), open_store()]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(n: int) -> None:
        try:
            start.wait()
            for batch in range(25):
                stores[n].save(
                    [
                        tagged(f"s3://p/{n}-{batch}-{i}.jpg", {"cat": 0.5, f"t{n}": 0.4})
                        for i in range(8)
                    ]
                )
                stores[n].add_job("job", [f"{n}-{batch}"])
                stores[n].mark_job_items("job", {f"{n}-{batch}": "done"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert stores[0].counts()["tagged"] == 2 * 25 * 8
    assert len(stores[1].search(["cat"], limit=1000)) == 400
    assert stores[1].job_counts("job").done == 50


def test_the_store_satisfies_the_protocol(store: SqlTagStore) -> None:
    assert isinstance(store, TagStore)


def test_from_settings_uses_the_configured_url(store_url: str) -> None:
    with SqlTagStore.from_settings(Settings(store=StoreSettings(url=store_url))) as store:
        store.save([CAT])
        assert store.get(CAT.ref) == CAT


def test_url_is_shown_without_password_and_libpq_urls_use_psycopg() -> None:
    # Creating an engine does not connect, so no server is contacted here.
    store = SqlTagStore("postgresql://tagger:s3cret@db.internal:5432/tags")
    assert store.url == "postgresql+psycopg://tagger:***@db.internal:5432/tags"
    assert SqlTagStore("postgres://u@h/db").url.startswith("postgresql+psycopg://")
    with pytest.raises(ValueError, match="mysql"):
        SqlTagStore("mysql://u@h/db")


def with_signature(ref: str, vector: list[float], nsfw: float | None = None) -> TagResult:
    result = tagged(ref, {"thing": 0.5}).model_copy(update={"signature": vector})
    if nsfw is not None:
        result = result.model_copy(update={"safety": Safety(nsfw=nsfw)})
    return result


def test_similar_ranks_by_signature_and_keeps_it_through_a_round_trip(
    store: SqlTagStore,
) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=64)
    vectors = {
        "s3://p/query.jpg": base,
        "s3://p/near.jpg": base + rng.normal(scale=0.1, size=64),
        "s3://p/middle.jpg": base + rng.normal(scale=1.0, size=64),
        "s3://p/far.jpg": rng.normal(size=64),
        "s3://p/risky.jpg": base + rng.normal(scale=0.05, size=64),
    }
    unit = {ref: (v / np.linalg.norm(v)).tolist() for ref, v in vectors.items()}
    store.save(
        [
            with_signature(ref, vector, 0.9 if "risky" in ref else 0.01)
            for ref, vector in unit.items()
        ]
        + [failed("s3://p/bad.jpg", at=T0)]
    )
    got = store.get("s3://p/near.jpg")
    assert got is not None and got.signature is not None
    np.testing.assert_allclose(got.signature, unit["s3://p/near.jpg"], atol=2e-3)  # float16

    hits = store.similar("s3://p/query.jpg", k=3)
    assert [h.ref for h in hits] == ["s3://p/risky.jpg", "s3://p/near.jpg", "s3://p/middle.jpg"]
    assert hits[0].score > hits[1].score > hits[2].score and hits[0].tags == ["thing"]
    safe = store.similar("s3://p/query.jpg", k=3, filters=SearchFilters(max_nsfw=0.5))
    assert [h.ref for h in safe] == ["s3://p/near.jpg", "s3://p/middle.jpg", "s3://p/far.jpg"]
    with pytest.raises(ValueError, match="no signature"):
        store.similar("s3://p/bad.jpg")
