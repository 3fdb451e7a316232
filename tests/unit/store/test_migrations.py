"""The store's schema migrations, on SQLite and PostgreSQL: a new database, a database that
round 1 made without migrations (with its results), and many processes opening one at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect

from tagger.schemas import AnalyzerRun, Status, Tag
from tagger.store import SqlTagStore, make_engine
from tagger.store.schema import current_revision, head_revision, migrate
from tagger.store.tables import is_declared, metadata
from tests.unit.store import round1_schema

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def engine_for(url: str) -> Engine:
    """An engine on the test database as the store opens it (sqlite-vec loaded)."""
    return make_engine(url)


def _declared(name: str | None, type_: str, _parent: object) -> bool:
    return type_ != "table" or is_declared(name)


def schema_differences(url: str) -> list[object]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return list(
                compare_metadata(
                    MigrationContext.configure(conn, opts={"include_name": _declared}), metadata
                )
            )
    finally:
        engine.dispose()


def test_a_new_database_is_migrated_to_exactly_the_declared_schema(store_url: str) -> None:
    with SqlTagStore(store_url) as store:
        assert store.counts() == {"tagged": 0, "failed": 0, "skipped": 0}
    assert schema_differences(store_url) == []
    engine = engine_for(store_url)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    engine.dispose()


def make_round1_database(url: str) -> None:
    """What round 1's store left behind: create_all tables, no alembic_version, results."""
    engine = engine_for(url)
    with engine.begin() as conn:
        round1_schema.metadata.create_all(conn)
        conn.execute(
            insert(round1_schema.photos),
            [
                {
                    "ref": "s3://b/cat.jpg", "etag": "e1", "status": "tagged", "reason": None,
                    "error": None, "model_version": "c7868d2c719c99c2", "width": 640,
                    "height": 480,
                    "classes": [{"wnid": "n02123045", "label": "tabby", "score": 0.8}],
                    "tagged_at": T0, "updated_at": T0,
                },
                {
                    "ref": "s3://b/bad.jpg", "etag": None, "status": "failed",
                    "reason": "not an image", "error": "not_an_image",
                    "model_version": "c7868d2c719c99c2", "width": None, "height": None,
                    "classes": [], "tagged_at": T0, "updated_at": T0,
                },
            ],
        )  # fmt: skip
        conn.execute(
            insert(round1_schema.tags),
            [
                {"ref": "s3://b/cat.jpg", "kind": "friendly", "tag": "cat", "score": 0.9,
                 "parents": ["animal"]},
                {"ref": "s3://b/cat.jpg", "kind": "parent", "tag": "animal", "score": 0.9,
                 "parents": None},
                {"ref": "s3://b/cat.jpg", "kind": "class", "tag": "tabby", "score": 0.8,
                 "parents": None},
            ],
        )  # fmt: skip
    with engine.connect() as conn:
        assert not inspect(conn).has_table("alembic_version")
    engine.dispose()


def test_a_round1_database_keeps_its_results_as_classify_results(store_url: str) -> None:
    make_round1_database(store_url)

    with SqlTagStore(store_url) as store:
        cat = store.get("s3://b/cat.jpg")
        bad = store.get("s3://b/bad.jpg")
        known = store.known(["s3://b/cat.jpg"])
        hits = store.search(["animal"])

    assert schema_differences(store_url) == []
    assert cat is not None and bad is not None
    assert cat.status is Status.TAGGED and cat.classes[0].label == "tabby"
    assert cat.tags == [Tag(name="cat", score=0.9, parents=["animal"])]
    # round 1's classifier result, kept as the classify analyser's, so only the new analysers
    # are outdated for it
    assert cat.analyzers == {
        "classify": AnalyzerRun(version="c7868d2c719c99c2", tags=cat.tags, fields=["classes"])
    }
    assert cat.outdated({"classify": "c7868d2c719c99c2", "objects": "o1"}) == ["objects"]
    assert cat.findings_of("classify") is not None
    assert known["s3://b/cat.jpg"].analyzers == {"classify": "c7868d2c719c99c2"}
    assert cat.objects is None and cat.safety is None and cat.colours is None
    assert bad.status is Status.FAILED and bad.analyzers == {}
    assert [hit.ref for hit in hits] == ["s3://b/cat.jpg"]


def test_migrating_twice_changes_nothing(store_url: str) -> None:
    make_round1_database(store_url)
    engine = engine_for(store_url)
    for _ in range(2):
        with engine.begin() as conn:
            migrate(conn)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    engine.dispose()
    with SqlTagStore(store_url) as store:
        assert store.counts() == {"tagged": 1, "failed": 1, "skipped": 0}


def test_many_stores_opening_one_round1_database_at_once_migrate_it_once(
    store_url: str,
) -> None:
    make_round1_database(store_url)

    def open_and_count(_: int) -> dict[str, int]:
        with SqlTagStore(store_url) as store:
            return store.counts()

    with ThreadPoolExecutor(6) as pool:
        counts = list(pool.map(open_and_count, range(6)))
    assert counts == [{"tagged": 1, "failed": 1, "skipped": 0}] * 6
    assert schema_differences(store_url) == []


@pytest.mark.parametrize("revision", ["0001"])
def test_the_first_revision_is_the_round1_schema(store_url: str, revision: str) -> None:
    """So stamping a round-1 database at 0001 is true: same tables, columns and indexes."""
    engine = engine_for(store_url)
    with engine.begin() as conn:
        migrate(conn, revision)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _declared})
        differences = [
            d for d in compare_metadata(context, round1_schema.metadata) if d[0] != "remove_table"
        ]
    engine.dispose()
    assert differences == []
