"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

SQLite lives in the test's tmp_path. PostgreSQL (the session's server, with pgvector) runs in a
fresh schema per test (selected through libpq's ``search_path`` option in the URL) that is
dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tagger.store import SqlTagStore
from tests.pg import PgServer, temporary_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database, SQLite or PostgreSQL; the schema is made by the store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'dir' / 'tags.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with temporary_schema(server) as url:
        yield url


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
