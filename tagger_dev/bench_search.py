"""``tagger bench-search``: the vector index and text search at library scale, both backends.

Real photos are tagged by the shipped flow; the library is filled up to ``--photos`` with
synthetic photos made from them: each signature a random mix (Dirichlet weights) of four real
signatures plus a variation of its own (see ``_NOISE``), re-normalised, with the tags, colours,
people and safety of its main ingredient. Mixing keeps what makes real signatures hard for an
index (positive, clustered, 1951 components) without making every synthetic photo a near-copy
of a real one.

Per backend it prints the load rate (rows, tags and the vector index written by the store's
own ``save``, so it is the index's build rate as production sees it), the index size,
``similar`` latency (p50/p95) and recall@10 against exact search over the same float16
vectors, and text-query latency.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from sqlalchemy import text

from tagger.config import Settings
from tagger.localfiles import find_photos
from tagger.pipeline import Pipeline
from tagger.schemas import Status, TagResult
from tagger.search import Searcher
from tagger.store import SqlTagStore, make_engine
from tagger_dev.devservers import PgVectorServer

FloatArray = npt.NDArray[np.float32]

_SAVE_BATCH = 1000
_NOISE = 0.01
"""Per-component size of each synthetic photo's own variation: two photos made from the same
mix then have cosine 0.84, as real photos sharing a friendly tag do (median over the ImageNet
dev photos). The variation is a random combination of real photos' deviations from their mean,
so it runs along directions real signatures vary in; isotropic noise of this size would spread
every photo over all 1951 components, which no real library does (on such a library of 100 000,
pgvector's HNSW recall@10 was 0.81 at ef_search 210, against 0.99 with this variation)."""


class BackendFigures(BaseModel):
    backend: str
    photos: int
    load_per_s: float
    index_mb: float
    database_mb: float
    similar_p50_ms: float
    similar_p95_ms: float
    recall_at_10: float
    text_p50_ms: float
    text_p95_ms: float
    text_hits_median: float


class SearchBenchReport(BaseModel):
    real_photos: int
    dims: int
    queries: int
    backends: list[BackendFigures]


def real_results(settings: Settings, folder: Path) -> list[TagResult]:
    paths = [str(path.resolve()) for path in find_photos([folder])]
    with Pipeline.from_settings(settings, allow_local_paths=True) as pipeline:
        results = [r for batch in pipeline.tag_stream(paths) for r in batch]
    return [r for r in results if r.status is Status.TAGGED and r.signature is not None]


def synthetic_library(
    real: Sequence[TagResult], total: int, seed: int = 0, noise: float = _NOISE
) -> list[TagResult]:
    rng = np.random.default_rng(seed)
    base = np.asarray([r.signature for r in real], np.float32)
    deviations = base - base.mean(axis=0)
    # scaled so that one random combination has the norm of isotropic noise of this size
    deviations *= noise * np.sqrt(base.shape[1]) / max(float(np.linalg.norm(deviations)), 1e-12)
    made: list[TagResult] = list(real)
    for start in range(len(real), total, 10_000):
        n = min(10_000, total - start)
        picks = rng.integers(0, len(real), size=(n, 4))
        weights = rng.dirichlet(np.full(4, 0.5), size=n).astype(np.float32)
        vectors = np.einsum("nk,nkd->nd", weights, base[picks])
        vectors += rng.normal(size=(n, len(real))).astype(np.float32) @ deviations
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        main = picks[np.arange(n), np.argmax(weights, axis=1)]
        for i in range(n):
            made.append(
                real[main[i]].model_copy(
                    update={
                        "ref": f"s3://bench/synthetic/{start + i:08d}.jpg",
                        "signature": vectors[i].tolist(),
                    }
                )
            )
    return made


def text_queries(real: Sequence[TagResult], count: int, seed: int = 1) -> list[str]:
    """Queries people type, made from the tags the real photos have: "a blue car", "dog on a
    beach" (two tags), or a single tag."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(count):
        photo = real[int(rng.integers(len(real)))]
        friendly = [t.name for t in photo.tags if "colour" not in t.parents and t.name != "nsfw"]
        colours = [t.name for t in photo.tags if "colour" in t.parents]
        if not friendly:
            continue
        noun = friendly[0]
        kind = int(rng.integers(3))
        if kind == 0 and colours:
            queries.append(f"a {colours[0]} {noun}")
        elif kind == 1 and len(friendly) > 1:
            queries.append(f"{noun} with {friendly[1]}")
        else:
            queries.append(noun)
    return queries


@contextmanager
def _backend(name: str, workdir: Path) -> Iterator[str]:
    if name == "sqlite":
        yield f"sqlite:///{workdir / 'bench-search.db'}"
        return
    server = PgVectorServer(workdir / "postgres")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def measure_backend(
    name: str,
    library: Sequence[TagResult],
    queries: int,
    texts: Sequence[str],
    workdir: Path,
    say: Callable[[str], None],
) -> BackendFigures:
    with _backend(name, workdir) as url, SqlTagStore(url) as store:
        started = time.perf_counter()
        for i in range(0, len(library), _SAVE_BATCH):
            store.save(library[i : i + _SAVE_BATCH])
        loaded = time.perf_counter() - started
        say(f"{name}: loaded {len(library)} photos in {loaded:.1f} s")
        stats = store.index_stats()
        matrix = np.asarray([r.signature for r in library], np.float16).astype(np.float32)
        rng = np.random.default_rng(2)
        picks = rng.choice(len(library), size=min(queries, len(library)), replace=False)
        store.similar(library[int(picks[0])].ref, k=10)  # warm caches
        latencies, recalls = [], []
        for index in picks:
            ref = library[int(index)].ref
            t0 = time.perf_counter()
            hits = store.similar(ref, k=10)
            latencies.append(time.perf_counter() - t0)
            scores = matrix @ matrix[int(index)]
            scores[int(index)] = -np.inf
            truth = {library[int(i)].ref for i in np.argpartition(-scores, 10)[:10]}
            recalls.append(len(truth & {hit.ref for hit in hits}) / 10)
        searcher = Searcher(store)
        searcher.text(texts[0])
        text_latencies, sizes = [], []
        for query in texts:
            t0 = time.perf_counter()
            found = searcher.text(query, limit=50)
            text_latencies.append(time.perf_counter() - t0)
            sizes.append(len(found.hits))
        size_mb = _database_mb(url)
    return BackendFigures(
        backend=stats.backend,
        photos=len(library),
        load_per_s=len(library) / loaded,
        index_mb=stats.index_bytes / 2**20,
        database_mb=size_mb,
        similar_p50_ms=_percentile(latencies, 50),
        similar_p95_ms=_percentile(latencies, 95),
        recall_at_10=float(np.mean(recalls)),
        text_p50_ms=_percentile(text_latencies, 50),
        text_p95_ms=_percentile(text_latencies, 95),
        text_hits_median=float(np.median(sizes)),
    )


def _database_mb(url: str) -> float:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    engine = make_engine(url)
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return float(size) / 2**20


def run_search_bench(
    settings: Settings,
    folder: Path,
    photos: int,
    backends: Sequence[str],
    queries: int,
    say: Callable[[str], None],
) -> SearchBenchReport:
    real = real_results(settings, folder)
    if not real:
        raise ValueError(f"no photo in {folder} could be tagged with a signature")
    say(f"tagged {len(real)} real photos; making a library of {photos}")
    library = synthetic_library(real, max(photos, len(real)))
    texts = text_queries(real, queries)
    figures = []
    with tempfile.TemporaryDirectory(prefix="tagger-bench-search-") as tmp:
        for name in backends:
            figures.append(measure_backend(name, library, queries, texts, Path(tmp), say))
    return SearchBenchReport(
        real_photos=len(real),
        dims=len(real[0].signature or ()),
        queries=queries,
        backends=figures,
    )
