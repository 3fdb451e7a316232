"""PostgreSQL for tests: the machine's server on 127.0.0.1:5432, one fresh schema per test.

A schema (selected through libpq's ``search_path`` option in the URL) isolates each test's
tables, so parallel runs on one server never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "test"
PG_USERS = ("postgres", "root")


def find_pg_user() -> tuple[str | None, str]:
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


@contextmanager
def temporary_schema(user: str) -> Iterator[str]:
    """A SQLAlchemy URL whose tables land in a new schema, dropped afterwards."""
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
