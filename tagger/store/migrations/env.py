"""Alembic's entry point, run by :mod:`tagger.store.schema` on the store's own connection.

There is no ``alembic.ini``: the store passes the open connection (inside the transaction that
holds the schema lock) in ``config.attributes``, so migrations run exactly where and when the
store decides, in the same transaction on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from tagger.store.tables import is_declared, metadata

connection = context.config.attributes["connection"]


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    return type_ != "table" or is_declared(name)


context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
