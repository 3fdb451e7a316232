"""``tagger bench-retag``: how fast a new label set reaches photos that are already stored.

A label set's head reads the embedding the classifier stored, so applying one to a library is
the shipped flow (``tag_and_store``) with every other analyser current: per photo the store is
asked, the content version checked (an S3 HEAD; for a file its bytes are read and hashed), the
head run on the stored signature, and the result saved — no decode, no backbone. This bench
tags ``--photos`` files (hard links to the given photos under distinct names) with the label
set inactive, then activates it and runs the same flow again, and prints both rates.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tagger.analyzers.labels import resolve_labelsets
from tagger.config import Settings
from tagger.localfiles import find_photos
from tagger.pipeline import Pipeline, tag_and_store
from tagger.schemas import Status
from tagger.store import SqlTagStore


class RetagReport(BaseModel):
    photos: int
    labelset: str
    full_seconds: float
    full_per_s: float
    retag_seconds: float
    retag_per_s: float
    decodes_during_retag: int
    tagged_with_labels: int
    speedup: float


def _library(folder: Path, photos: int, into: Path) -> list[str]:
    """``photos`` names for the given photos (hard links, or copies across file systems)."""
    sources = list(find_photos([folder]))
    if not sources:
        raise ValueError(f"no photos in {folder}")
    into.mkdir(parents=True, exist_ok=True)
    refs: list[str] = []
    for index in range(photos):
        source = sources[index % len(sources)]
        target = into / f"{index:07d}{source.suffix.lower()}"
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
        refs.append(str(target))
    return refs


def _run(pipeline: Pipeline, store: SqlTagStore, refs: Sequence[str]) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    results = [r for batch in tag_and_store(pipeline, store, refs) for r in batch.results]
    return time.perf_counter() - started, results


def run_retag_bench(
    settings: Settings, folder: Path, photos: int, labelset: str, say: Callable[[str], None]
) -> RetagReport:
    with tempfile.TemporaryDirectory(prefix="tagger-retag-") as tmp:
        work = Path(tmp)
        base = settings.model_copy(
            update={"data_dir": work / "data", "analyzers": ["classify", "labels"]}
        )
        idle = base.model_copy(update={"labelsets": []})
        active = base.model_copy(update={"labelsets": [labelset]})
        (chosen,) = resolve_labelsets(active)
        refs = _library(folder, photos, work / "photos")
        store = SqlTagStore.from_settings(base)
        try:
            say(f"tagging {photos} photos with the classifier (label set inactive)…")
            with Pipeline.from_settings(idle, allow_local_paths=True) as pipeline:
                full, _ = _run(pipeline, store, refs)
            say(f"applying {chosen.spec} to the stored photos…")
            with Pipeline.from_settings(active, allow_local_paths=True) as pipeline:
                decodes: list[int] = []
                decode_into = pipeline.decoder.decode_into

                def counted(*args: Any, **kwargs: Any) -> Any:
                    decodes.append(1)
                    return decode_into(*args, **kwargs)

                pipeline.decoder.decode_into = counted  # type: ignore[method-assign]
                retag, results = _run(pipeline, store, refs)
        finally:
            store.close()
    labelled = sum(
        1 for r in results if r.status is Status.TAGGED and "labels" in r.analyzer_versions()
    )
    return RetagReport(
        photos=photos,
        labelset=chosen.spec,
        full_seconds=round(full, 2),
        full_per_s=round(photos / full, 1),
        retag_seconds=round(retag, 2),
        retag_per_s=round(photos / retag, 1),
        decodes_during_retag=len(decodes),
        tagged_with_labels=labelled,
        speedup=round(full / retag, 1),
    )
