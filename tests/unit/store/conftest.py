"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

SQLite lives in the test's tmp_path. PostgreSQL runs in a fresh schema per test (selected
through libpq's ``search_path`` option in the URL) that is dropped afterwards, so parallel test
runs on one server never see each other's tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tagger.store import SqlTagStore

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "test"
PG_USERS = ("postgres", "root")


def _pg_user() -> tuple[str | None, str]:
    """The first user the local server accepts, or the reason none did."""
    errors = []
    for user in PG_USERS:
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=user, connect_timeout=3
            ):
                return user, ""
        except psycopg.Error as exc:
            errors.append(f"{user}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(errors)


def _admin(user: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=user, autocommit=True
    )


@pytest.fixture(scope="session")
def pg_user() -> str:
    user, why = _pg_user()
    if user is None:
        pytest.skip(f"no PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_DATABASE} ({why})")
    return user


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database, SQLite or PostgreSQL; the schema is made by the store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'dir' / 'tags.db'}"
        return
    user: str = request.getfixturevalue("pg_user")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _admin(user) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        with _admin(user) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], SqlTagStore]]:
    """Opens further stores on the same database (a second process, a reopened CLI)."""
    opened: list[SqlTagStore] = []

    def _open() -> SqlTagStore:
        store = SqlTagStore(store_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], SqlTagStore]) -> SqlTagStore:
    return open_store()
