"""The int8 classifier: built deterministically from the fp32 one, gated, loaded by Settings."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tagger.analyzers.classify import ClassifyAnalyzer, build_int8, ensure_classifier
from tagger.cli import app
from tagger.config import Settings
from tagger.errors import ModelError
from tagger.imaging import preprocess
from tagger.model.int8 import MIN_AGREEMENT, decide_reduce_range
from tagger.model.quantize import cpu_has_vnni
from tagger.model.registry import ModelArtifact, classifier_dir
from tagger.model.runtime import ModelRuntime

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def int8(model_dir: Path, artifact: ModelArtifact) -> ModelArtifact:
    """The int8 classifier beside the session's fp32 one, as build_if_missing makes it."""
    return ensure_classifier(Settings(model_dir=model_dir, model={"precision": "int8"}))


def test_the_int8_artifact_says_what_it_is(int8: ModelArtifact, artifact: ModelArtifact) -> None:
    assert int8.path == artifact.path.with_name("lite0-int8")
    manifest = int8.manifest
    assert manifest.precision == "int8" and artifact.manifest.precision == "fp32"
    assert int8.version != artifact.version
    assert manifest.int8 is not None
    assert manifest.int8.fp32_version == artifact.version
    quantization = manifest.int8.quantization
    assert quantization.format == "QDQ" and quantization.per_channel
    assert quantization.reduce_range == decide_reduce_range(None) == (not cpu_has_vnni())
    assert quantization.calibration_method == "MinMax" and quantization.calibration_samples == 80
    gate = manifest.int8.gate
    assert gate.kind == "calibration-agreement" and gate.agreement >= MIN_AGREEMENT


def test_the_int8_build_is_reproducible(
    int8: ModelArtifact, artifact: ModelArtifact, model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(model_dir=model_dir)
    again = build_int8(settings, tmp_path / "again", fp32=artifact)
    assert (again.path / "model.onnx").read_bytes() == (int8.path / "model.onnx").read_bytes()


def test_int8_tags_the_photos_as_fp32_does(
    int8: ModelArtifact, artifact: ModelArtifact, sample_photos: dict[str, bytes]
) -> None:
    spec = artifact.manifest.preprocess
    batch = np.stack(
        [
            preprocess(Image.open(io.BytesIO(data)).convert("RGB"), spec)
            for data in sample_photos.values()
        ]
    )
    fp32_probabilities, _ = ModelRuntime(artifact).predict(batch)
    int8_probabilities, embeddings = ModelRuntime(int8).predict(batch)
    agree = fp32_probabilities.argmax(1) == int8_probabilities.argmax(1)
    assert agree.sum() >= len(agree) - 1
    assert int8_probabilities[0].argmax() in (281, 282, 285)  # chelsea is a cat
    assert embeddings.shape == (len(sample_photos), artifact.manifest.embedding_size)


def test_the_gate_refuses_a_broken_quantisation(
    artifact: ModelArtifact, model_dir: Path, tmp_path: Path
) -> None:
    """Per-tensor weights at full range lose the network (about 0.35 agreement): refused,
    and nothing is installed."""
    settings = Settings(model_dir=model_dir, model={"int8_reduce_range": False})
    destination = tmp_path / "broken"
    with pytest.raises(ModelError, match="refused"):
        build_int8(settings, destination, fp32=artifact, per_channel=False)
    assert not destination.exists()
    assert not list(tmp_path.iterdir())


def test_precision_int8_changes_the_version_and_tags(
    int8: ModelArtifact,
    artifact: ModelArtifact,
    settings: Settings,
    sample_photos: dict[str, bytes],
    write_photos: Callable[[dict[str, bytes]], dict[str, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.model.precision = "int8"
    assert classifier_dir(settings) == int8.path
    assert ClassifyAnalyzer.installed_version(settings) == int8.version
    assert ClassifyAnalyzer.create(settings).version == int8.version != artifact.version
    paths = write_photos({"chelsea": sample_photos["chelsea"]})
    monkeypatch.setenv("TAGGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAGGER_MODEL_DIR", str(settings.model_dir))
    monkeypatch.setenv("TAGGER_ANALYZERS", "classify")
    monkeypatch.setenv("TAGGER_MODEL__PRECISION", "int8")
    result = CliRunner().invoke(app, ["tag", "--json", str(paths["chelsea"])])
    assert result.exit_code == 0, result.output
    assert int8.version in result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert lines and "cat" in json.dumps(lines[-1])
