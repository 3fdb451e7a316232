"""Backbone embeddings of training photos, through onnxruntime, cached on disk by content.

Training a head takes seconds; embedding the photos takes the minutes (10 ms of network per
photo on 2 cores, plus the fetch and decode). Each embedding is therefore kept under
``<feature_cache_dir>/<backbone version>/<sha256 of the photo's bytes>.npy``: a re-train with
other options, another label set over the same photos, or an eval after a train only pays for
photos it has not seen. The key is the content, not the name, so a renamed or copied photo hits
the cache too, and a new backbone version never reads another's embeddings.

The photo goes through the very fetch, decode and preprocessing the ``classify`` analyser uses,
so the embedding a head is trained on is the one a worker stores for the same photo.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tagger.config import Settings
from tagger.errors import TaggerError
from tagger.imaging import ImageDecoder, preprocess
from tagger.model.labelset import unit_rows
from tagger.model.registry import ModelArtifact, ensure_artifact
from tagger.model.runtime import ModelRuntime
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher, redact_url

CHUNK = 256  # photos in flight at once: bounds the prepared tensors held (150 MB at 224 px)

FloatArray = npt.NDArray[np.float32]


def shown(ref: str) -> str:
    """How a photo is named in a report: without a presigned query or credentials."""
    try:
        return PhotoRef.parse(ref).identity
    except ValueError:
        return redact_url(ref) if "://" in ref else ref


@dataclass
class Extracted:
    """Embeddings of the photos that could be read, in input order (``rows[i]`` is the input
    index of row ``i``), and why the others could not."""

    rows: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    vectors: list[FloatArray] = field(default_factory=list)
    pixels: list[FloatArray] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    computed: int = 0
    cached: int = 0

    def matrix(self) -> FloatArray:
        size = self.vectors[0].shape[0] if self.vectors else 0
        return (
            unit_rows(np.stack(self.vectors)) if self.vectors else np.zeros((0, size), np.float32)
        )


@dataclass
class _Loaded:
    index: int
    digest: str | None = None
    vector: FloatArray | None = None
    tensor: FloatArray | None = None
    failure: str | None = None
    from_cache: bool = False


class FeatureExtractor:
    """The backbone and its input path, made once per ``tagger train`` or ``labels eval``."""

    def __init__(self, settings: Settings, artifact: ModelArtifact | None = None) -> None:
        self.artifact = artifact or ensure_artifact(settings)
        self.runtime = ModelRuntime(self.artifact, intra_op_threads=settings.model.intra_op_threads)
        self.spec = self.artifact.manifest.preprocess
        self.fetcher = Fetcher(settings, allow_local_paths=True)
        self.decoder = ImageDecoder(settings.image)
        self.cache = settings.feature_cache_dir / self.artifact.version
        self._threads = settings.fetch.io_threads
        self._batch = settings.batch_size

    @property
    def backbone_version(self) -> str:
        return self.artifact.version

    def close(self) -> None:
        self.fetcher.close()

    def extract(
        self,
        refs: Sequence[str],
        *,
        keep_pixels: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Extracted:
        """Embeddings for ``refs`` (cached ones read, the rest computed and cached); with
        ``keep_pixels`` also each photo's preprocessed tensor, which fine-tuning trains on."""
        out = Extracted()
        with ThreadPoolExecutor(self._threads, thread_name_prefix="tagger-train-io") as pool:
            for start in range(0, len(refs), CHUNK):
                chunk = range(start, min(start + CHUNK, len(refs)))
                loaded = list(pool.map(lambda i: self._load(i, refs[i], keep_pixels), chunk))
                self._embed(
                    [item for item in loaded if item.vector is None and item.failure is None]
                )
                for item in loaded:
                    if item.failure is not None or item.digest is None or item.vector is None:
                        out.failures.append((shown(refs[item.index]), item.failure or "not read"))
                        continue
                    out.rows.append(item.index)
                    out.hashes.append(item.digest)
                    out.vectors.append(item.vector)
                    if keep_pixels and item.tensor is not None:
                        out.pixels.append(item.tensor)
                out.cached += sum(1 for item in loaded if item.from_cache)
                if progress is not None:
                    progress(len(chunk))
        out.computed = len(out.rows) - out.cached
        return out

    def _load(self, index: int, ref: str, keep_pixels: bool) -> _Loaded:
        item = _Loaded(index)
        try:
            fetched = self.fetcher.fetch(PhotoRef.parse(ref))
            item.digest = hashlib.sha256(fetched.data).hexdigest()
            item.vector = None if keep_pixels else self._cached(item.digest)
            item.from_cache = item.vector is not None
            if item.vector is None:
                item.tensor, _ = self.decoder.decode_into(
                    fetched.data, self.spec.resize_to, lambda image: preprocess(image, self.spec)
                )
        except (TaggerError, ValueError) as exc:
            item.failure = exc.reason if isinstance(exc, TaggerError) else str(exc).splitlines()[0]
        return item

    def _embed(self, items: Sequence[_Loaded]) -> None:
        for start in range(0, len(items), self._batch):
            batch = items[start : start + self._batch]
            tensors = [item.tensor for item in batch if item.tensor is not None]
            _, embeddings = self.runtime.predict(np.stack(tensors))
            for item, embedding in zip(batch, embeddings, strict=True):
                item.vector = np.asarray(embedding, np.float32)
                if item.digest is not None:
                    self._store(item.digest, item.vector)

    def _path(self, digest: str) -> Path:
        return self.cache / digest[:2] / f"{digest}.npy"

    def _cached(self, digest: str) -> FloatArray | None:
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            return np.asarray(np.load(path), np.float32)
        except (OSError, ValueError):  # a torn or foreign file: recompute it
            return None

    def _store(self, digest: str, vector: FloatArray) -> None:
        """Written to a temporary name and renamed, so a concurrent train never reads half."""
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, vector)
        os.replace(staging, path)
