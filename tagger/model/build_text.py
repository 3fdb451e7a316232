"""Build the ``text`` analyser's artifact: the PP-OCRv4 ONNX models that ``rapidocr-onnxruntime``
ships inside its wheel, copied (not converted: they are ONNX already) into ``TAGGER_MODEL_DIR``
with a manifest of their provenance, licence and checksums.

The package's own code runs them at analysis time (text detection, angle classification,
recognition and the geometry between them), pointed at these verified copies, so the analyser
version changes exactly when the model bytes do. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tagger.errors import ModelError
from tagger.model.packages import declared_licence, installed_file, pinned_distribution
from tagger.model.registry import VERSION_CHARS, sha256_file
from tagger.model.staging import staged

PACKAGE = "rapidocr-onnxruntime"
PACKAGE_VERSION = "1.4.4"
MANIFEST_FILE = "manifest.json"
MEMBERS: dict[str, str] = {
    "det": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    "cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
}
UPSTREAM = "PaddleOCR PP-OCRv4 (det, rec) and PP-OCR mobile v2.0 (cls), converted by RapidOCR"
UPSTREAM_LICENCE = "Apache-2.0 (PaddlePaddle/PaddleOCR)"


class TextManifest(BaseModel):
    """What a ``text`` artifact is; written by :func:`build_text_artifact`."""

    name: str = "pp-ocrv4"
    kind: Literal["ocr"] = "ocr"
    version: str = Field(description="sha256 prefix over the three model files' checksums")
    files: dict[str, str] = Field(description="role (det, cls, rec) -> file name")
    sha256: dict[str, str] = Field(description="file name -> sha256")
    package: str = PACKAGE
    package_version: str = PACKAGE_VERSION
    package_licence: str
    upstream: str = UPSTREAM
    licence: str = UPSTREAM_LICENCE
    downloaded: Literal[False] = False
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def combined_digest(checksums: dict[str, str]) -> str:
    text = ";".join(f"{name}={checksums[name]}" for name in sorted(checksums))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_text_manifest(path: Path) -> TextManifest:
    """The verified manifest: every model file present and matching its checksum."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"no text artifact in {path}; build it with `tagger model build`")
    try:
        manifest = TextManifest.model_validate_json(manifest_path.read_text("utf-8"))
    except ValueError as exc:
        raise ModelError(f"unreadable manifest in {path}: {exc}") from exc
    for name, expected in manifest.sha256.items():
        file = path / name
        if not file.is_file() or sha256_file(file) != expected:
            raise ModelError(f"{file} does not match its manifest; refusing a modified model")
    if not combined_digest(manifest.sha256).startswith(manifest.version):
        raise ModelError(f"the version in {manifest_path} does not match its files")
    return manifest


def build_text_artifact(destination: Path) -> TextManifest:
    """Copy the wheel's model files into a staging folder and rename it into place."""
    dist = pinned_distribution(
        PACKAGE, PACKAGE_VERSION, "the text analyser's OCR (pip install 'tagger[text]')"
    )
    sources = {role: installed_file(dist, member) for role, member in MEMBERS.items()}
    with staged(destination) as staging:
        checksums: dict[str, str] = {}
        for path in sources.values():
            shutil.copyfile(path, staging / path.name)
            checksums[path.name] = sha256_file(staging / path.name)
        manifest = TextManifest(
            version=combined_digest(checksums)[:VERSION_CHARS],
            files={role: path.name for role, path in sources.items()},
            sha256=checksums,
            package_licence=declared_licence(dist),
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
    return manifest


if __name__ == "__main__":
    print(build_text_artifact(Path(sys.argv[1])).model_dump_json(indent=2))
