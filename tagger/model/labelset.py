"""Label sets: custom tags a user taught tagger (``tagger train``), as versioned artifacts.

A label set is an artifact under the model contract: ``model.onnx`` (a head that maps the
backbone's unit-length embedding to label scores, or for a fine-tuned set a whole network from
the image), ``manifest.json`` (labels, per-label thresholds, metrics, a hash of the training
data, the backbone it was trained on) and its version, the checksum prefix of ``model.onnx``.
Versions live side by side under ``<TAGGER_LABELSETS_DIR>/<name>/<version>/`` (by default
``<model_dir>/labelsets``), so a worker
pinned to ``cars@3f2a…`` keeps applying exactly that one while a newer one is trained.

Which sets are applied is ``TAGGER_LABELSETS`` (``cars@<version>,shoes``; a bare name means its
newest local version); when unset, the sets activated in the model folder (``tagger labels
activate``), which is what a laptop uses.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from tagger.errors import ConfigError, ModelError
from tagger.model.registry import ArtifactManifest, OnnxArtifact, read_verified_manifest
from tagger.schemas import PreprocessSpec

ACTIVE_FILE = "active.json"
CONFUSION_FILE = "confusion.png"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class LabelMetrics(BaseModel):
    """How one label did on the validation split (or an eval set)."""

    precision: float
    recall: float
    support: int
    threshold: float = Field(description="score from which the label becomes a tag")
    precision_target_met: bool = Field(
        default=True,
        description="False when no threshold reached the precision target on validation; the "
        "threshold is then the best-precision one",
    )


class Metrics(BaseModel):
    accuracy: float | None = Field(default=None, description="top-1, exclusive sets only")
    micro_f1: float | None = Field(default=None, description="multi-label sets only")
    photos: int
    labels: dict[str, LabelMetrics]
    confusion: list[list[int]] | None = Field(
        default=None, description="rows: true label, columns: predicted (exclusive sets)"
    )


class TrainingData(BaseModel):
    """What the set was trained on: enough to tell two trainings apart, never the photos."""

    sha256: str = Field(description="hash of the sorted (content hash, labels) pairs")
    photos: int
    per_label: dict[str, int]
    validation_photos: int
    skipped: int = Field(default=0, description="photos that could not be read")


class Backbone(BaseModel):
    """The classifier whose embedding the head reads; a head only fits its own backbone."""

    name: str
    version: str
    embedding_size: int
    licence: str
    weights_package: str


class LabelSetManifest(ArtifactManifest):
    name: str
    kind: Literal["head", "fine-tuned"] = Field(
        description="head: reads the stored embedding (no pixels); fine-tuned: a whole network "
        "run on the photo"
    )
    multi: bool = Field(description="sigmoid multi-label (True) or softmax exclusive labels")
    labels: list[str]
    thresholds: dict[str, float]
    precision_target: float
    input_name: str
    output_name: str = "scores"
    preprocess: PreprocessSpec | None = Field(
        default=None, description="the image preprocessing of a fine-tuned set"
    )
    backbone: Backbone
    data: TrainingData
    metrics: Metrics
    training: dict[str, float | int | str | bool] = Field(default_factory=dict)
    builder: dict[str, str] = Field(default_factory=dict)
    licence: str = Field(
        default="the trainer's own photos; weights derived from the backbone (see backbone)",
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


class LabelSet(OnnxArtifact[LabelSetManifest]):
    """A verified label set folder."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def spec(self) -> str:
        return self.manifest.spec

    @property
    def confusion_png(self) -> Path:
        return self.path / CONFUSION_FILE


class LabelSetSpec(BaseModel):
    """``name`` or ``name@version`` as written in ``TAGGER_LABELSETS``."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> LabelSetSpec:
        name, _, version = text.strip().partition("@")
        check_name(name)
        if version and not re.fullmatch(r"[0-9a-f]{4,64}", version):
            raise ConfigError(f"label set version {version!r} in {text!r} is not a hex version")
        return cls(name=name, version=version or None)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"label set name {name!r}: use 1-63 lower-case letters, digits, '-' or '_'"
        )
    return name


def version_dir(root: Path, name: str, version: str) -> Path:
    """Where one version lives under the label sets folder ``root`` (``TAGGER_LABELSETS_DIR``)."""
    return root / check_name(name) / version


def load_labelset(path: Path) -> LabelSet:
    manifest = read_verified_manifest(
        path, LabelSetManifest, f"label set in {path}; train one with `tagger train`"
    )
    if set(manifest.thresholds) != set(manifest.labels):
        raise ModelError(f"label set in {path} has thresholds for other labels than its own")
    return LabelSet(path=path, manifest=manifest)


def versions_of(root: Path, name: str) -> list[LabelSet]:
    """Every local version of ``name``, newest first."""
    folder = root / check_name(name)
    if not folder.is_dir():
        return []
    found = [load_labelset(path) for path in folder.iterdir() if _is_version(path)]
    return sorted(found, key=lambda s: s.manifest.created_at, reverse=True)


def all_labelsets(root: Path) -> list[LabelSet]:
    """Every local label set version, by name then newest first."""
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name))
    return [found for name in names for found in versions_of(root, name)]


def find_local(root: Path, spec: LabelSetSpec) -> LabelSet | None:
    """The version ``spec`` names (its newest when it names none), if it is here."""
    if spec.version is None:
        versions = versions_of(root, spec.name)
        return versions[0] if versions else None
    folder = root / spec.name
    matches = (
        [p for p in folder.iterdir() if _is_version(p) and p.name.startswith(spec.version)]
        if folder.is_dir()
        else []
    )
    if len(matches) > 1:
        raise ConfigError(f"{spec} names {len(matches)} versions; give more of the version")
    return load_labelset(matches[0]) if matches else None


def _is_version(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


# -- which sets are active on this machine ---------------------------------------------------


def read_active(root: Path) -> list[LabelSetSpec]:
    """The sets ``tagger labels activate`` chose, pinned to their version."""
    path = root / ACTIVE_FILE
    if not path.is_file():
        return []
    try:
        pinned = json.loads(path.read_text("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"unreadable {path}: {exc}") from exc
    return [LabelSetSpec(name=name, version=version) for name, version in sorted(pinned.items())]


def write_active(root: Path, specs: list[LabelSetSpec]) -> None:
    path = root / ACTIVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pinned = {spec.name: spec.version for spec in sorted(specs, key=lambda s: s.name)}
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(pinned, indent=2) + "\n", "utf-8")
    staging.replace(path)


# -- applying a head -------------------------------------------------------------------------


def unit_rows(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length: what every head is trained on and fed, so an embedding
    rebuilt from a stored signature (which keeps only its direction) scores the same."""
    array = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = np.divide(
        array, norms, out=np.zeros_like(array), where=norms > 0
    )
    return unit
