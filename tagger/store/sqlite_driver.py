"""The SQLite driver the store uses: one that can load sqlite-vec into the same database file.

Python's ``sqlite3`` may be built without ``enable_load_extension`` (pyenv's and some distros'
builds are), and sqlite-vec is a loadable extension. ``pysqlite3`` (the ``pysqlite3-binary``
wheel) is the same module compiled against its own recent SQLite with extensions on; the store
takes the standard module when it can load extensions, else that one.
"""

from __future__ import annotations

import importlib
import sqlite3
from types import ModuleType
from typing import Any

import sqlite_vec


class SqliteExtensionsUnavailable(RuntimeError):
    """Neither sqlite3 nor pysqlite3 can load sqlite-vec here; the message says what to do."""


def _loads_extensions(module: ModuleType) -> bool:
    connection = module.connect(":memory:")
    try:
        return hasattr(connection, "enable_load_extension")
    finally:
        connection.close()


def dbapi() -> ModuleType:
    """The DB-API module to hand SQLAlchemy (``create_engine(url, module=...)``)."""
    if _loads_extensions(sqlite3):
        return sqlite3
    try:
        module = importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        module = None
    if module is None or not _loads_extensions(module):
        raise SqliteExtensionsUnavailable(
            "this Python's sqlite3 cannot load extensions, which the vector index (sqlite-vec) "
            "needs: pip install pysqlite3-binary, or use a Python built with "
            "--enable-loadable-sqlite-extensions"
        )
    return module


def load_vector_extension(dbapi_connection: Any) -> None:
    """Load sqlite-vec into one new connection (its functions and the ``vec0`` module)."""
    dbapi_connection.enable_load_extension(True)
    try:
        sqlite_vec.load(dbapi_connection)
    finally:
        dbapi_connection.enable_load_extension(False)
