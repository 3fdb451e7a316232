"""The ``objects`` analyser: COCO object detection → labelled boxes → tags such as ``person``.

The classifier answers "what is this photo of"; it misses the person standing beside the car.
A detector answers "what is in it" and where, so photos get ``person``/``people``/``group`` and
the COCO things in them, and the boxes are kept for the gallery and for later crops.

The network is SSD-MobileNet-v2 trained on COCO (built by :mod:`tagger.model.build_objects`).
It takes uint8 RGB pixels and does its own normalisation, box decoding and sigmoid; this module
resizes, batches, runs the zoo's per-class NMS in numpy (cheaper than the graph's own, see
:func:`tagger.model.build_objects.convert`) and turns the result into pydantic models. Photos
are stretched to 300x300 (as the network was trained) so that every photo of a batch has the
same shape and the normalised boxes it returns are already fractions of the photo as given.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from tagger.config import ObjectSettings, Settings
from tagger.errors import ModelError
from tagger.model.build_objects import (
    DetectorManifest,
    build_detector_artifact,
    detector_pixels,
    parse_labels,
)
from tagger.model.registry import OnnxArtifact, ensure_built, read_verified_manifest
from tagger.model.runtime import open_session
from tagger.schemas import DetectedObject, Findings, Tag, merge_tags

# The defaults live in Settings (ObjectSettings), where the threshold's evidence is given.
DEFAULT_SCORE_THRESHOLD = ObjectSettings().score_threshold
DEFAULT_MAX_BATCH = ObjectSettings().max_batch
ARTIFACT_DIR = "objects"
VOCABULARY_FILE = ("data", "object_vocabulary.toml")

Box = tuple[float, float, float, float]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]


class Detections(BaseModel):
    """Everything found in one photo, best first, and how many of each label."""

    objects: list[DetectedObject]
    counts: dict[str, int]


class DetectorArtifact(OnnxArtifact[DetectorManifest]):
    """A verified ``objects`` artifact on disk."""

    labels: dict[int, str]


def load_detector_artifact(path: Path) -> DetectorArtifact:
    """Read and verify an artifact: manifest present, checksum matches, labels fit the outputs.

    A half-copied or modified model must never tag photos, so a mismatch is refused.
    """
    manifest = read_verified_manifest(
        path,
        DetectorManifest,
        f"objects artifact in {path}; build it with python -m tagger.model.build_objects",
    )
    labels_path = path / manifest.labels_file
    if not labels_path.is_file():
        raise ModelError(f"no labels file {manifest.labels_file} in {path}")
    labels = parse_labels(labels_path.read_text("utf-8"))
    if not labels or min(labels) < 1 or max(labels) > manifest.num_classes:
        raise ModelError(
            f"labels of {path} do not fit a detector of {manifest.num_classes} class ids"
        )
    return DetectorArtifact(path=path, manifest=manifest, labels=labels)


class ObjectDetector:
    """A loaded, verified detector; create one per process and feed it batches."""

    def __init__(
        self,
        artifact: DetectorArtifact | Path,
        *,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        max_batch: int = DEFAULT_MAX_BATCH,
        intra_op_threads: int = 0,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), not {score_threshold}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.artifact = (
            artifact if isinstance(artifact, DetectorArtifact) else load_detector_artifact(artifact)
        )
        self.score_threshold = score_threshold
        self.max_batch = max_batch
        manifest = self.artifact.manifest
        self._session = open_session(self.artifact.onnx_path, intra_op_threads)
        inputs = {i.name: i.type for i in self._session.get_inputs()}
        if inputs.get(manifest.input_name) != "tensor(uint8)":
            raise ModelError(f"model has no uint8 input {manifest.input_name!r} ({inputs})")
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        missing = [name for name in manifest.output_names if name not in outputs]
        if missing:
            raise ModelError(f"model has no outputs {missing} (has {sorted(outputs)})")
        columns = outputs[manifest.output_names[1]][-1]
        if columns != manifest.num_classes + 1:
            raise ModelError(
                f"model scores {columns} columns, its labels need {manifest.num_classes + 1}"
            )
        self._input = manifest.input_name
        self._outputs = list(manifest.output_names)
        self._size = manifest.input_size

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def input_size(self) -> int:
        return self._size

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """Detections for each (already upright) image, in order, in batches of ``max_batch``."""
        return self.detect_pixels([self.pixels(image) for image in images])

    def detect_pixels(
        self, pixels: Sequence[np.ndarray[Any, np.dtype[np.uint8]]]
    ) -> list[Detections]:
        """Detections for photos already made into network input by :meth:`pixels`."""
        results: list[Detections] = []
        for start in range(0, len(pixels), self.max_batch):
            chunk = pixels[start : start + self.max_batch]
            batch = np.stack(chunk)
            boxes, scores = self._session.run(self._outputs, {self._input: batch})
            results.extend(
                self._decode(boxes[i].reshape(-1, 4), scores[i]) for i in range(len(chunk))
            )
        return results

    def pixels(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
        return detector_pixels(image, self._size)

    def _decode(self, boxes: FloatArray, scores: FloatArray) -> Detections:
        manifest = self.artifact.manifest
        kept = per_class_nms(
            np.clip(boxes, 0.0, 1.0),
            scores[:, 1:],
            score_threshold=self.score_threshold,
            iou_threshold=manifest.iou_threshold,
            max_per_class=manifest.max_per_class,
            max_detections=manifest.max_detections,
        )
        objects: list[DetectedObject] = []
        for anchor, column, score in kept:
            label = self.artifact.labels.get(column + 1)
            if label is None:  # one of the ids COCO left unused
                continue
            y0, x0, y1, x1 = boxes[anchor].clip(0.0, 1.0).tolist()
            objects.append(DetectedObject(label=label, score=score, box=(x0, y0, x1, y1)))
        return Detections(objects=objects, counts=dict(Counter(o.label for o in objects)))


def per_class_nms(
    boxes: FloatArray,
    scores: FloatArray,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_per_class: int,
    max_detections: int,
) -> list[tuple[int, int, float]]:
    """(anchor, class column, score) kept by greedy NMS run per class, best first.

    Greedy NMS only lets a box be suppressed by a better one, so dropping the boxes below the
    score threshold first keeps exactly the boxes above it that NMS over all of them would
    keep, at a fraction of the cost: typically a few dozen candidates out of 1917 x 90.
    """
    anchors, columns = np.nonzero(scores >= score_threshold)
    kept: list[tuple[int, int, float]] = []
    for column in np.unique(columns).tolist():
        candidates = anchors[columns == column]
        for anchor in _nms(boxes[candidates], scores[candidates, column], iou_threshold)[
            :max_per_class
        ]:
            index = int(candidates[anchor])
            kept.append((index, column, float(scores[index, column])))
    kept.sort(key=lambda item: -item[2])
    return kept[:max_detections]


def _nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy NMS on (ymin, xmin, ymax, xmax) boxes; suppresses IoU above."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=1)
        union = areas[best] + areas[rest] - overlap
        iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        order = rest[iou <= iou_threshold]
    return keep


class LabelTag(BaseModel):
    """The friendly tag a detector label counts as."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str | None = None
    parents: tuple[str, ...] = ()


class CountTag(BaseModel):
    """A tag earned by ``min`` detections of one label (``people`` for 2+ persons)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    min: int = Field(ge=2)
    tag: str
    parents: tuple[str, ...] = ()


class ObjectVocabulary(BaseModel):
    """``tagger/data/object_vocabulary.toml``: detector labels as friendly tags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: dict[str, LabelTag]
    counts: tuple[CountTag, ...] = ()

    @classmethod
    def load(cls) -> ObjectVocabulary:
        text = resources.files("tagger").joinpath(*VOCABULARY_FILE).read_text("utf-8")
        return cls.model_validate(tomllib.loads(text))

    def tag_of(self, label: str) -> tuple[str, tuple[str, ...]]:
        entry = self.labels.get(label)
        if entry is None:
            return label, ()
        return entry.tag or label, entry.parents


def object_tags(detections: Detections, vocabulary: ObjectVocabulary) -> list[Tag]:
    """Tags with their confidence, best first: each label found, as its friendly tag (its best
    score), plus the count tags (``people`` for 2+ persons, ``group`` for 4+).

    The confidence of "at least n persons" is the n-th best person score, since that many
    detections all had to be right for the tag to be right.
    """
    scores: dict[str, list[float]] = {}
    for obj in detections.objects:
        scores.setdefault(obj.label, []).append(obj.score)
    groups: list[list[Tag]] = []
    for label, values in scores.items():
        values.sort(reverse=True)
        name, parents = vocabulary.tag_of(label)
        groups.append([Tag(name=name, score=round(values[0], 6), parents=list(parents))])
    for rule in vocabulary.counts:
        values = scores.get(rule.label, [])
        if len(values) >= rule.min:
            score = round(values[rule.min - 1], 6)
            groups.append([Tag(name=rule.tag, score=score, parents=list(rule.parents))])
    return merge_tags(groups)


class ObjectsAnalyzer:
    """The ``objects`` analyser: detections, counts and their tags."""

    name = "objects"
    reads: tuple[str, ...] = ()

    def __init__(self, detector: ObjectDetector, vocabulary: ObjectVocabulary) -> None:
        self.detector = detector
        self.vocabulary = vocabulary

    @classmethod
    def create(cls, settings: Settings) -> ObjectsAnalyzer:
        artifact = ensure_built(
            settings.model_dir / ARTIFACT_DIR,
            load_detector_artifact,
            build_detector_artifact,
            allowed=settings.model.build_if_missing,
        )
        detector = ObjectDetector(
            artifact,
            score_threshold=settings.objects.score_threshold,
            max_batch=settings.objects.max_batch,
            intra_op_threads=settings.model.intra_op_threads,
        )
        return cls(detector, ObjectVocabulary.load())

    @staticmethod
    def build(settings: Settings) -> str:
        return build_detector_artifact(settings.model_dir / ARTIFACT_DIR).version

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return load_detector_artifact(settings.model_dir / ARTIFACT_DIR).version

    @property
    def version(self) -> str:
        return self.detector.version

    @property
    def min_side(self) -> int:
        return self.detector.input_size

    def prepare(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
        return self.detector.pixels(image)

    def analyse(
        self,
        prepared: Sequence[np.ndarray[Any, np.dtype[np.uint8]]],
        context: Sequence[Mapping[str, Findings]],
    ) -> list[Findings]:
        return [
            Findings(
                objects=found.objects,
                counts=found.counts,
                tags=object_tags(found, self.vocabulary),
            )
            for found in self.detector.detect_pixels(prepared)
        ]

    def warm_up(self) -> None:
        side = self.detector.input_size
        self.detector.detect_pixels([np.zeros((side, side, 3), np.uint8)])
