"""Bringing a store's database to the current schema with Alembic, once per process.

Three kinds of database arrive here: a new one (every migration runs), a round-1 one made by
``metadata.create_all`` before migrations existed (its tables are exactly revision 0001, so it
is stamped there and the later migrations run), and a current one (nothing to do; one query).
Workers start together, so on PostgreSQL the whole check-and-upgrade runs in one transaction
under an advisory lock and DDL is transactional: a second process waits, then finds the
database current. SQLite takes its write lock with ``BEGIN IMMEDIATE`` (the store's ``write``
connections), which serialises the same way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, inspect, select

from tagger.store.vectors import SCHEMA_LOCK_KEY

ROUND1_REVISION = "0001"


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration without an ini file: scripts inside the package."""
    config = Config()
    location = resources.files("tagger.store").joinpath("migrations")
    config.set_main_option("script_location", str(Path(str(location))))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migrate(connection: Connection, target: str = "head") -> None:
    """Upgrade the database behind ``connection`` (inside its transaction) to ``target``."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
    current = current_revision(connection)
    if current is not None and current == (head_revision() if target == "head" else target):
        return
    config = alembic_config(connection)
    if current is None and inspect(connection).has_table("photos"):
        command.stamp(config, ROUND1_REVISION)
    command.upgrade(config, target)
