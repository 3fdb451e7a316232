"""The ``classify`` analyser: the EfficientNet-Lite ImageNet classifier, its top classes and the
friendly tags they sum into (tabby → ``cat`` → ``animal``).

It answers "what is this photo of" and was tagger's only analyser; the runtime and vocabulary
are unchanged, this module only fits them to the analyser protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from tagger.config import Settings
from tagger.imaging import preprocess
from tagger.model.int8 import DevSet, build_int8_artifact, decide_reduce_range
from tagger.model.registry import (
    ModelArtifact,
    artifact_dir,
    build_artifact,
    classifier_dir,
    ensure_artifact,
    ensure_built,
    load_artifact,
)
from tagger.model.runtime import ModelRuntime
from tagger.schemas import Findings
from tagger.similarity import SignatureSpace
from tagger.vocabulary import Vocabulary


class ClassifyAnalyzer:
    """Top classes and friendly tags from the configured EfficientNet-Lite artifact."""

    name = "classify"
    reads: tuple[str, ...] = ()

    def __init__(self, runtime: ModelRuntime, vocabulary: Vocabulary, settings: Settings) -> None:
        self.runtime = runtime
        self.vocabulary = vocabulary
        self.space = SignatureSpace(vocabulary)
        self._spec = runtime.artifact.manifest.preprocess
        self._top = settings.tags.top_classes
        self._threshold = settings.tags.threshold
        self._batch = settings.batch_size

    @classmethod
    def create(cls, settings: Settings) -> ClassifyAnalyzer:
        runtime = ModelRuntime(
            ensure_classifier(settings), intra_op_threads=settings.model.intra_op_threads
        )
        return cls(runtime, Vocabulary.load(), settings)

    @staticmethod
    def build(settings: Settings) -> str:
        fp32 = build_artifact(settings.model.arch, artifact_dir(settings))
        if settings.model.precision == "fp32":
            return fp32.version
        return build_int8(settings, fp32=fp32).version

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return load_artifact(classifier_dir(settings)).version

    @property
    def version(self) -> str:
        return self.runtime.version

    @property
    def min_side(self) -> int:
        return self._spec.resize_to

    def prepare(self, image: Image.Image) -> npt.NDArray[np.float32]:
        return preprocess(image, self._spec)

    def analyse(
        self, prepared: Sequence[npt.NDArray[np.float32]], context: Sequence[Mapping[str, Any]]
    ) -> list[Findings]:
        probabilities, embeddings = self.runtime.predict(np.stack(prepared))
        results: list[Findings] = []
        for probs, embedding in zip(probabilities, embeddings, strict=True):
            classes, tags = self.vocabulary.postprocess(probs, self._top, self._threshold)
            signature = self.space.signature(probs, embedding).tolist()
            results.append(Findings(classes=classes, tags=tags, signature=signature))
        return results

    def warm_up(self) -> None:
        size = self.runtime.size
        blank = np.zeros((self._batch, size, size, 3), np.float32)
        for _ in range(2):
            self.runtime.predict(blank)


def ensure_classifier(settings: Settings) -> ModelArtifact:
    """The classifier the settings name (fp32 or int8), built on first use when allowed."""
    if settings.model.precision == "fp32":
        return ensure_artifact(settings)
    return ensure_built(
        classifier_dir(settings),
        load_artifact,
        lambda path: build_int8(settings, path),
        allowed=settings.model.build_if_missing,
    )


def build_int8(
    settings: Settings,
    destination: Path | None = None,
    *,
    fp32: ModelArtifact | None = None,
    dev: DevSet | None = None,
    per_channel: bool = True,
) -> ModelArtifact:
    """Quantise the fp32 classifier (built first if missing and allowed) into the int8 one,
    calibrated through this analyser's own preprocessing, gated on ``dev`` when given."""
    source = fp32 or ensure_artifact(settings)
    spec = source.manifest.preprocess
    return build_int8_artifact(
        source,
        destination or classifier_dir(settings, "int8"),
        prepare=lambda image: preprocess(image, spec),
        reduce_range=decide_reduce_range(settings.model.int8_reduce_range),
        dev=dev,
        per_channel=per_channel,
    )
