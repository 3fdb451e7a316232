"""The vector index behind "more like this": pgvector on PostgreSQL, sqlite-vec on SQLite.

Both backends answer one question, :meth:`VectorIndex.candidates`: which stored photos are
probably nearest to a query signature. The store then scores those candidates exactly against
the float16 signatures in ``photos`` (a few hundred dot products), so both backends return the
same scores and filters are applied in the same SQL.

- **PostgreSQL: pgvector HNSW** on ``halfvec``, inner product (signatures have unit length, so
  this is cosine). The vectors sit in ``photo_vectors`` with their dimension; the HNSW index is
  an expression index on ``vector::halfvec(dims)`` restricted to that dimension (pgvector's
  documented way to index vectors whose size depends on the model), created by :meth:`ensure`
  the first time a signature of that size is saved. Queries use ``hnsw.iterative_scan`` so a
  filter never starves the result.
- **SQLite: sqlite-vec** ``vec0`` table ``photo_codes`` in the same database file, holding a
  1024-bit SimHash code of each signature (the sign of its dot product with 1024 fixed random
  ±1 hyperplanes, Charikar 2002): the Hamming distance between two codes estimates the angle
  between the signatures. sqlite-vec searches only by brute force; float vectors cost 1.45 µs a
  photo (145 ms at 100 000), 1024-bit codes 0.04 µs. sqlite-vec's own binary quantiser takes the
  sign of each component, which says nothing here: most of a signature (summed probabilities,
  pooled activations) is positive. The hyperplanes come from SHAKE-256 of a fixed seed, so every
  process and every numpy version derives the same ones without storing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, text

FloatArray = npt.NDArray[np.float32]

SCHEMA_LOCK_KEY = 0x7461_6767
"""The advisory lock key of :mod:`tagger.store.schema` (which imports this one)."""

CODE_BITS = 1024
"""SimHash bits per photo: at 1024, 200 candidates hold the exact top 10 in 99.5 % of queries
on signatures mixed from real photos (512 bits needed twice the candidates)."""

_HYPERPLANE_SEED = b"tagger signature simhash v1"


class IndexStats(BaseModel):
    """What ``tagger bench-search`` prints about an index."""

    model_config = ConfigDict(frozen=True)

    backend: str
    vectors: int
    index_bytes: int


class VectorIndex(Protocol):
    """Approximate nearest signatures; writes happen inside the store's transaction."""

    backend: str

    def ensure(self, conn: Connection, dims: int) -> None:
        """Make the index ready for signatures of ``dims`` components."""
        ...

    def put(self, conn: Connection, vectors: Mapping[str, FloatArray]) -> None:
        """Index these photos' signatures, replacing what was indexed for them."""
        ...

    def remove(self, conn: Connection, refs: Sequence[str]) -> None: ...

    def candidates(self, conn: Connection, query: FloatArray, k: int) -> list[str]:
        """About the ``k`` refs whose signatures are nearest to ``query``, nearest first."""
        ...

    def stats(self, conn: Connection) -> IndexStats: ...


def index_for(dialect: str) -> VectorIndex:
    if dialect == "postgresql":
        return PgVectorIndex()
    if dialect == "sqlite":
        return SqliteVecIndex()
    raise ValueError(f"no vector index for {dialect}")


class SqliteVecIndex:
    """SimHash codes in a sqlite-vec ``vec0`` table, searched by Hamming distance."""

    backend = "sqlite-vec"
    table = "photo_codes"

    def __init__(self) -> None:
        self._hyperplanes: dict[int, FloatArray] = {}

    def hyperplanes(self, dims: int) -> FloatArray:
        planes = self._hyperplanes.get(dims)
        if planes is None:
            seed = _HYPERPLANE_SEED + dims.to_bytes(4, "little")
            stream = hashlib.shake_256(seed).digest(dims * CODE_BITS // 8)
            signs = np.unpackbits(np.frombuffer(stream, np.uint8)).reshape(dims, CODE_BITS)
            planes = signs.astype(np.float32) * 2 - 1
            self._hyperplanes[dims] = planes
        return planes

    def codes(self, vectors: FloatArray) -> npt.NDArray[np.uint8]:
        """Packed SimHash codes, one row of ``CODE_BITS / 8`` bytes per vector."""
        matrix = np.atleast_2d(np.asarray(vectors, np.float32))
        projected = matrix @ self.hyperplanes(matrix.shape[1])
        return np.packbits(projected > 0, axis=1)

    def ensure(self, conn: Connection, dims: int) -> None:
        """The ``vec0`` table is made by the migration; the codes do not depend on ``dims``."""

    def put(self, conn: Connection, vectors: Mapping[str, FloatArray]) -> None:
        if not vectors:
            return
        refs = list(vectors)
        self.remove(conn, refs)
        by_size: dict[int, list[str]] = {}
        for ref in refs:
            by_size.setdefault(len(vectors[ref]), []).append(ref)
        rows: list[dict[str, object]] = []
        for group in by_size.values():
            codes = self.codes(np.stack([vectors[ref] for ref in group]))
            rows.extend(
                {"ref": ref, "code": code.tobytes()} for ref, code in zip(group, codes, strict=True)
            )
        conn.execute(
            text(f"INSERT INTO {self.table}(ref, code) VALUES (:ref, vec_bit(:code))"), rows
        )

    def remove(self, conn: Connection, refs: Sequence[str]) -> None:
        # vec0 has no upsert and takes a plain "=" on its key best.
        conn.execute(text(f"DELETE FROM {self.table} WHERE ref = :ref"), [{"ref": r} for r in refs])

    def candidates(self, conn: Connection, query: FloatArray, k: int) -> list[str]:
        code = self.codes(query)[0].tobytes()
        rows = conn.execute(
            text(
                f"SELECT ref FROM {self.table} WHERE code MATCH vec_bit(:code) AND k = :k "
                "ORDER BY distance"
            ),
            {"code": code, "k": k},
        )
        return [row.ref for row in rows]

    def stats(self, conn: Connection) -> IndexStats:
        count = conn.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one()
        # The codes live in fixed-size chunk blobs of a vec0 shadow table.
        size = conn.execute(
            text(f"SELECT coalesce(sum(length(vectors)), 0) FROM {self.table}_vector_chunks00")
        ).scalar_one()
        return IndexStats(backend=self.backend, vectors=int(count), index_bytes=int(size))


class PgVectorIndex:
    """``halfvec`` rows in ``photo_vectors`` with an HNSW index per signature size."""

    backend = "pgvector"
    table = "photo_vectors"
    m = 16
    ef_construction = 64

    def __init__(self) -> None:
        self._ready: set[int] = set()

    @staticmethod
    def index_name(dims: int) -> str:
        return f"ix_photo_vectors_hnsw_{dims}"

    def ensure(self, conn: Connection, dims: int) -> None:
        if dims in self._ready:
            return
        # Workers starting together on a new database would race to create it; the schema's
        # advisory lock serialises them (the loser then finds it and does nothing).
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {self.index_name(dims)} ON {self.table} "
                f"USING hnsw ((vector::halfvec({dims})) halfvec_ip_ops) "
                f"WITH (m = {self.m}, ef_construction = {self.ef_construction}) "
                f"WHERE dims = {dims}"
            )
        )
        self._ready.add(dims)

    def put(self, conn: Connection, vectors: Mapping[str, FloatArray]) -> None:
        if not vectors:
            return
        for dims in {len(vector) for vector in vectors.values()}:
            self.ensure(conn, dims)
        statement = text(
            f"INSERT INTO {self.table}(ref, dims, vector) "
            "VALUES (:ref, :dims, CAST(:vector AS halfvec)) "
            "ON CONFLICT (ref) DO UPDATE SET dims = excluded.dims, vector = excluded.vector"
        )
        conn.execute(
            statement,
            [
                {"ref": ref, "dims": len(vector), "vector": _literal(vector)}
                for ref, vector in vectors.items()
            ],
        )

    def remove(self, conn: Connection, refs: Sequence[str]) -> None:
        conn.execute(text(f"DELETE FROM {self.table} WHERE ref = ANY(:refs)"), {"refs": list(refs)})

    def candidates(self, conn: Connection, query: FloatArray, k: int) -> list[str]:
        dims = len(query)
        # ef_search bounds how many neighbours one scan can return; iterative scans go on
        # past it when rows are filtered out (pgvector 0.8).
        conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(k, 1000))}"))
        conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        rows = conn.execute(
            text(
                f"SELECT ref FROM {self.table} WHERE dims = :dims "
                f"ORDER BY vector::halfvec({dims}) <#> CAST(:query AS halfvec({dims})) LIMIT :k"
            ),
            {"dims": dims, "query": _literal(query), "k": k},
        )
        return [row.ref for row in rows]

    def stats(self, conn: Connection) -> IndexStats:
        count = conn.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one()
        size = conn.execute(
            text(
                "SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_index "
                "WHERE indrelid = CAST(:table AS regclass)"
            ),
            {"table": self.table},
        ).scalar_one()
        return IndexStats(backend=self.backend, vectors=int(count), index_bytes=int(size))


def _literal(vector: npt.ArrayLike) -> str:
    """pgvector's text form; float16 keeps four significant digits, so "%.5g" loses nothing."""
    return "[" + ",".join(f"{value:.5g}" for value in np.asarray(vector, np.float32)) + "]"
