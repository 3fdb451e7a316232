"""The ``safety`` analyser: a not-safe-for-work score from Yahoo's open_nsfw, and an ``nsfw`` tag.

A photo service needs to know which uploads are pornographic before it shows them in a gallery
or a search result; the classifier and the detector do not say. open_nsfw (built by
:mod:`tagger.model.build_safety`) gives P(nsfw) for a photo; the result is ``Safety(nsfw=…)``
and the tag ``nsfw`` when the score reaches the threshold.

The network only knows pornography: violence, gore or drugs score low, and large areas of
skin-coloured texture (a bare arm, a wetsuit, some food) push the score up. Yahoo's guidance:
below 0.2 safe, above 0.8 NSFW, the band between needs a second look. The default threshold is
therefore 0.8, so a tag means "the model commits to it", and the raw score is kept for anyone
who wants the band.

Preprocessing repeats Yahoo's ``classify_nsfw.py`` exactly, since the network was trained behind
it and scores move when any step is skipped: stretch to 256x256 (bilinear), JPEG encode and
decode (the compression artefacts are part of what it learnt), centre crop 224, BGR, minus the
Caffe means. It is numpy/Pillow only: 2-4 ms a photo against 27-35 ms of inference (1 thread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tagger.analyzers.base import scored_tags
from tagger.config import SafetySettings, Settings
from tagger.errors import ModelError
from tagger.model.build_safety import (
    SafetyManifest,
    SafetyPreprocess,
    build_safety_artifact,
    safety_input,
    safety_input_into,
)
from tagger.model.registry import OnnxArtifact, ensure_built, read_verified_manifest
from tagger.model.runtime import open_session
from tagger.schemas import Findings, Safety

# The defaults live in Settings (SafetySettings), where the threshold's evidence is given.
DEFAULT_NSFW_THRESHOLD = SafetySettings().threshold
DEFAULT_MAX_BATCH = SafetySettings().max_batch
NSFW_TAG = "nsfw"
ARTIFACT_DIR = "safety"

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


class SafetyArtifact(OnnxArtifact[SafetyManifest]):
    """A verified ``safety`` artifact on disk."""


def load_safety_artifact(path: Path) -> SafetyArtifact:
    """Read and verify an artifact: manifest present and readable, checksum matches.

    A half-copied or modified model must never score photos, so a mismatch is refused.
    """
    manifest = read_verified_manifest(
        path,
        SafetyManifest,
        f"safety artifact in {path}; build it with python -m tagger.model.build_safety",
    )
    return SafetyArtifact(path=path, manifest=manifest)


def preprocess(images: Sequence[Image.Image], spec: SafetyPreprocess) -> FloatArray:
    """The (N, crop, crop, 3) BGR mean-subtracted float32 batch for ``images``."""
    batch: FloatArray = np.empty((len(images), spec.crop, spec.crop, 3), np.float32)
    for index, image in enumerate(images):
        safety_input_into(batch[index], image, spec)
    return batch


def safety_tags(
    safety: Safety, threshold: float = DEFAULT_NSFW_THRESHOLD
) -> list[tuple[str, float]]:
    """``[("nsfw", score)]`` when the score reaches ``threshold``, else nothing."""
    return [(NSFW_TAG, safety.nsfw)] if safety.nsfw >= threshold else []


class SafetyScorer:
    """A loaded, verified open_nsfw model; create one per process and feed it batches."""

    def __init__(
        self,
        artifact: SafetyArtifact | Path,
        *,
        threshold: float = DEFAULT_NSFW_THRESHOLD,
        max_batch: int = DEFAULT_MAX_BATCH,
        intra_op_threads: int = 0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.artifact = (
            artifact if isinstance(artifact, SafetyArtifact) else load_safety_artifact(artifact)
        )
        self.threshold = threshold
        self.max_batch = max_batch
        manifest = self.artifact.manifest
        self._session = open_session(self.artifact.onnx_path, intra_op_threads)
        self._check_signature(manifest)
        self._input = manifest.input_name
        self._output = manifest.output_name
        self._nsfw_index = manifest.nsfw_index
        self._spec = manifest.preprocess

    def _check_signature(self, manifest: SafetyManifest) -> None:
        """The graph must take what the manifest says it takes and give two probabilities."""
        spec = manifest.preprocess
        inputs = {i.name: (i.type, list(i.shape[1:])) for i in self._session.get_inputs()}
        if inputs.get(manifest.input_name) != ("tensor(float)", [spec.crop, spec.crop, 3]):
            raise ModelError(
                f"model has no float input {manifest.input_name!r} of "
                f"[N, {spec.crop}, {spec.crop}, 3] ({inputs})"
            )
        outputs = {o.name: list(o.shape[1:]) for o in self._session.get_outputs()}
        width = len(manifest.output_classes)
        if outputs.get(manifest.output_name) != [width] or manifest.nsfw_index >= width:
            raise ModelError(f"model has no output {manifest.output_name!r} of width {width}")

    @property
    def version(self) -> str:
        return self.artifact.version

    def score(self, images: Sequence[Image.Image]) -> list[Safety]:
        """P(nsfw) for each (already upright) image, in order, in batches of ``max_batch``."""
        results: list[Safety] = []
        for start in range(0, len(images), self.max_batch):
            batch = preprocess(images[start : start + self.max_batch], self._spec)
            results.extend(Safety(nsfw=score) for score in self.score_batch(batch))
        return results

    def score_batch(self, batch: FloatArray) -> list[float]:
        """P(nsfw) for an already preprocessed batch (for benchmarks and parity checks)."""
        (probabilities,) = self._session.run([self._output], {self._input: batch})
        nsfw = np.clip(np.asarray(probabilities, np.float64)[:, self._nsfw_index], 0.0, 1.0)
        return [float(value) for value in nsfw]

    def tags(self, safety: Safety) -> list[tuple[str, float]]:
        """The ``nsfw`` tag at this scorer's threshold (from Settings when wired in)."""
        return safety_tags(safety, self.threshold)


class SafetyAnalyzer:
    """The ``safety`` analyser: P(nsfw), and the ``nsfw`` tag at the configured threshold."""

    name = "safety"
    reads: tuple[str, ...] = ()

    def __init__(self, scorer: SafetyScorer) -> None:
        self.scorer = scorer
        self._spec = scorer.artifact.manifest.preprocess

    @classmethod
    def create(cls, settings: Settings) -> SafetyAnalyzer:
        artifact = ensure_built(
            settings.model_dir / ARTIFACT_DIR,
            load_safety_artifact,
            build_safety_artifact,
            allowed=settings.model.build_if_missing,
        )
        scorer = SafetyScorer(
            artifact,
            threshold=settings.safety.threshold,
            max_batch=settings.safety.max_batch,
            intra_op_threads=settings.model.intra_op_threads,
        )
        return cls(scorer)

    @staticmethod
    def build(settings: Settings) -> str:
        return build_safety_artifact(settings.model_dir / ARTIFACT_DIR).version

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return load_safety_artifact(settings.model_dir / ARTIFACT_DIR).version

    @property
    def version(self) -> str:
        return self.scorer.version

    @property
    def min_side(self) -> int:
        return self._spec.resize

    def prepare(self, image: Image.Image) -> FloatArray:
        return safety_input(image, self._spec)

    def analyse(
        self, prepared: Sequence[FloatArray], context: Sequence[Mapping[str, Findings]]
    ) -> list[Findings]:
        scores: list[float] = []
        batch = self.scorer.max_batch
        for start in range(0, len(prepared), batch):
            scores.extend(self.scorer.score_batch(np.stack(prepared[start : start + batch])))
        return [self._findings(Safety(nsfw=round(score, 6))) for score in scores]

    def _findings(self, safety: Safety) -> Findings:
        return Findings(safety=safety, tags=scored_tags(self.scorer.tags(safety)))

    def warm_up(self) -> None:
        crop = self._spec.crop
        self.scorer.score_batch(np.zeros((1, crop, crop, 3), np.float32))
