"""The one tagging flow: fetch → decode → preprocess → ONNX batch → tags.

Every entry point runs photos through :meth:`Pipeline.tag_batch` (or :meth:`Pipeline.tag_stream`
for many batches): the local CLI, the Celery task inside a worker, the benchmark and the eval.
A photo that fails at any step becomes a ``failed`` TagResult with a reason; it never fails the
rest of its batch. The pipeline holds the per-process resources (model session, fetcher) and is
built once per process, which is why ``tag_batch`` is a method rather than a free function.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tagger.config import Settings
from tagger.errors import TaggerError
from tagger.imaging import load_tensor
from tagger.model.registry import ensure_artifact
from tagger.model.runtime import ModelRuntime
from tagger.schemas import PhotoRef, Status, TagResult
from tagger.sources import Fetcher
from tagger.store import PhotoState
from tagger.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A photo ready for the model, or the result it already has (failed or skipped)."""

    ref: str
    tensor: np.ndarray[Any, Any] | None = None
    etag: str | None = None
    width: int | None = None
    height: int | None = None
    result: TagResult | None = None


def content_tag(data: bytes) -> str:
    """Stand-in for an ETag where the source has none, so idempotence still holds."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


class Pipeline:
    """Per-process tagging resources and the flow that uses them."""

    def __init__(
        self,
        settings: Settings,
        runtime: ModelRuntime,
        vocabulary: Vocabulary,
        fetcher: Fetcher,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.vocabulary = vocabulary
        self.fetcher = fetcher
        self._pool = ThreadPoolExecutor(
            max_workers=settings.fetch.io_threads, thread_name_prefix="tagger-io"
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, allow_local_paths: bool | None = None
    ) -> Pipeline:
        artifact = ensure_artifact(settings)
        runtime = ModelRuntime(artifact, intra_op_threads=settings.model.intra_op_threads)
        return cls(
            settings,
            runtime,
            Vocabulary.load(),
            Fetcher(settings, allow_local_paths=allow_local_paths),
        )

    @property
    def model_version(self) -> str:
        return self.runtime.version

    def warm_up(self) -> None:
        """Run one batch of blank input: onnxruntime allocates and tunes on its first runs,
        which should happen at process start rather than inside a user's first task."""
        size = self.runtime.size
        blank = np.zeros((self.settings.batch_size, size, size, 3), np.float32)
        for _ in range(2):
            self.runtime.predict(blank)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the flow -------------------------------------------------------------------------

    def tag_batch(
        self, refs: Sequence[PhotoRef | str], known: Mapping[str, PhotoState] | None = None
    ) -> list[TagResult]:
        """Tag one batch; results come back in the order of ``refs``."""
        return self._infer(self._submit_loads(refs, known or {}))

    def tag_stream(
        self,
        refs: Iterable[PhotoRef | str],
        known: Mapping[str, PhotoState] | None = None,
        batch_size: int | None = None,
    ) -> Iterator[list[TagResult]]:
        """Tag many photos batch by batch, downloading and decoding the next batch while the
        current one is inferred, so the CPU never waits on the network."""
        size = batch_size or self.settings.batch_size
        pending: list[Future[Loaded]] | None = None
        for chunk in _chunks(refs, size):
            loading = self._submit_loads(chunk, known or {})
            if pending is not None:
                yield self._infer(pending)
            pending = loading
        if pending is not None:
            yield self._infer(pending)

    def _submit_loads(
        self, refs: Sequence[PhotoRef | str], known: Mapping[str, PhotoState]
    ) -> list[Future[Loaded]]:
        return [self._pool.submit(self._load, ref, known) for ref in refs]

    def _load(self, raw: PhotoRef | str, known: Mapping[str, PhotoState]) -> Loaded:
        ref_text = str(raw)
        etag: str | None = None
        try:
            ref = PhotoRef.parse(raw)
            ref_text = ref.uri
            previous = known.get(ref_text)
            if (
                previous is not None
                and ref.kind == "s3"
                and previous.is_tagged_by(self.fetcher.head(ref), self.model_version)
            ):
                return Loaded(ref_text, result=self._skipped(ref_text, previous))
            fetched = self.fetcher.fetch(ref)
            etag = fetched.etag or content_tag(fetched.data)
            if previous is not None and previous.is_tagged_by(etag, self.model_version):
                return Loaded(ref_text, result=self._skipped(ref_text, previous))
            spec = self.runtime.artifact.manifest.preprocess
            tensor, decoded = load_tensor(fetched.data, self.settings.image, spec)
            return Loaded(ref_text, tensor, etag, decoded.width, decoded.height)
        except (TaggerError, ValueError) as exc:  # ValueError: an invalid reference
            # the ETag of a photo that failed to decode is kept, so a replaced photo is retried
            return Loaded(ref_text, result=self._failed(ref_text, exc, etag))
        except Exception as exc:  # a bug must not lose the rest of the batch
            log.exception("unexpected error loading %s", ref_text)
            return Loaded(ref_text, result=self._failed(ref_text, exc, etag))

    def _infer(self, futures: Sequence[Future[Loaded]]) -> list[TagResult]:
        loaded = [future.result() for future in futures]
        ready = [item for item in loaded if item.result is None]
        if ready:
            try:
                probabilities, _ = self.runtime.predict(
                    np.stack([item.tensor for item in ready if item.tensor is not None])
                )
            except Exception as exc:
                log.exception("inference failed for a batch of %d", len(ready))
                for item in ready:
                    item.result = self._failed(item.ref, exc)
            else:
                for item, probs in zip(ready, probabilities, strict=True):
                    item.result = self._tagged(item, probs)
        return [item.result for item in loaded if item.result is not None]

    # -- results --------------------------------------------------------------------------

    def _tagged(self, item: Loaded, probs: np.ndarray[Any, Any]) -> TagResult:
        classes, tags = self.vocabulary.postprocess(
            probs, self.settings.tags.top_classes, self.settings.tags.threshold
        )
        return TagResult(
            ref=item.ref,
            status=Status.TAGGED,
            model_version=self.model_version,
            etag=item.etag,
            width=item.width,
            height=item.height,
            classes=classes,
            tags=tags,
        )

    def _skipped(self, ref: str, previous: PhotoState) -> TagResult:
        return TagResult(
            ref=ref,
            status=Status.SKIPPED,
            reason="already tagged with this content and model version",
            model_version=previous.model_version,
            etag=previous.etag,
        )

    def _failed(self, ref: str, exc: Exception, etag: str | None = None) -> TagResult:
        if isinstance(exc, TaggerError):
            reason, code, transient = exc.reason, exc.code, not exc.permanent
        elif isinstance(exc, ValueError):
            reason, code, transient = str(exc).splitlines()[0], "invalid_ref", False
        else:
            reason, code, transient = f"internal error: {type(exc).__name__}", "internal", True
        return TagResult(
            ref=ref,
            status=Status.FAILED,
            reason=reason,
            error=code,
            transient=transient,
            model_version=self.model_version,
            etag=etag,
        )


def _chunks(items: Iterable[PhotoRef | str], size: int) -> Iterator[list[PhotoRef | str]]:
    chunk: list[PhotoRef | str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
