"""`tagger train` end to end on generated labelled photos: a label set that generalises, the
same one again from the same data, and bad photos reported rather than fatal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tagger.config import Settings
from tagger.model.labelset import LabelSet, load_labelset
from tagger.model.runtime import open_session
from tagger.training.dataset import DatasetError
from tagger.training.train import TrainOptions, evaluate_labelset, train_labelset


def test_the_label_set_tells_held_out_photos_apart(
    settings: Settings, brand_labelset: LabelSet, logo_photos: dict[str, Path]
) -> None:
    manifest = brand_labelset.manifest
    assert manifest.labels == ["branded", "plain"] and manifest.kind == "head"
    assert manifest.data.photos == 48 and manifest.data.per_label == {"branded": 24, "plain": 24}
    assert manifest.backbone.licence == "Apache-2.0"
    assert set(manifest.thresholds) == {"branded", "plain"}
    session = open_session(brand_labelset.onnx_path)
    assert [i.name for i in session.get_inputs()] == ["embedding"]
    report = evaluate_labelset(settings, brand_labelset, logo_photos["test"])
    assert report.photos == 40 and report.metrics.accuracy is not None
    assert report.metrics.accuracy >= 0.8, report.metrics
    assert report.confusion_png is not None and report.confusion_png.is_file()
    assert sum(map(sum, report.metrics.confusion or [])) == 40


def test_same_photos_same_version_and_the_second_run_reads_the_cache(
    settings: Settings, logo_photos: dict[str, Path], tmp_path: Path
) -> None:
    first = train_labelset(settings, logo_photos["train"], TrainOptions(name="brand"))
    assert first.computed == 48 and first.cached == 0
    # the same photos under other names, in another folder: same content, same label set
    copy = tmp_path / "renamed"
    for label in ("branded", "plain"):
        (copy / label).mkdir(parents=True)
        for index, path in enumerate(sorted((logo_photos["train"] / label).iterdir())):
            shutil.copy(path, copy / label / f"z{index}.jpg")
    second = train_labelset(settings, copy, TrainOptions(name="brand"))
    assert second.cached == 48 and second.computed == 0
    assert second.labelset == first.labelset
    assert (
        load_labelset(second.path).manifest.data.sha256
        == load_labelset(first.path).manifest.data.sha256
    )


def test_unreadable_and_duplicate_photos_are_reported_not_fatal(
    settings: Settings, logo_photos: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    shutil.copytree(logo_photos["train"], root)
    (root / "plain" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "plain" / "empty.png").write_bytes(b"")
    dupe = sorted((root / "branded").iterdir())[0]
    shutil.copy(dupe, root / "plain" / "same-as-branded.jpg")
    report = train_labelset(settings, root, TrainOptions(name="brand"))
    failed = {Path(ref).name: reason for ref, reason in report.failures}
    assert set(failed) == {"broken.jpg", "empty.png"}
    assert all(reason for reason in failed.values())
    (duplicate,) = report.duplicates
    assert duplicate.dropped and duplicate.labels == ["branded", "plain"]
    assert report.photos == 47  # 48 photos, less the branded one that reappears as plain


def test_too_few_readable_photos_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(5):
            (root / label / f"{index}.jpg").write_bytes(b"junk" if label == "b" else _jpeg(index))
    with pytest.raises(DatasetError, match=r"too few readable, distinct photos for: b \(0\)"):
        train_labelset(settings, root, TrainOptions(name="broken"))


def _jpeg(seed: int) -> bytes:
    from tests.conftest import jpeg_bytes

    rng = np.random.default_rng(seed)
    return jpeg_bytes(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_multi_label_from_a_csv_with_negatives(
    settings: Settings, logo_photos: dict[str, Path], tmp_path: Path
) -> None:
    """--multi: a sigmoid per label, photos with none of the labels as negatives."""
    lines = ["ref,label"]
    for label in ("branded", "plain"):
        for path in sorted((logo_photos["train"] / label).iterdir()):
            lines.append(f"{path},{'logo' if label == 'branded' else ''}")
            if "coffee" in path.name or path.name.endswith(("0.jpg", "6.jpg")):
                lines.append(f"{path},picked")
    csv = tmp_path / "refs.csv"
    csv.write_text("\n".join(lines) + "\n")
    report = train_labelset(settings, csv, TrainOptions(name="logo", multi=True))
    labelset = load_labelset(report.path)
    assert labelset.manifest.multi and labelset.manifest.labels == ["logo", "picked"]
    assert report.metrics.micro_f1 is not None and report.metrics.accuracy is None
    session = open_session(labelset.onnx_path)
    scores = session.run(["scores"], {"embedding": np.ones((3, 1280), np.float32) / 1280**0.5})[0]
    assert scores.shape == (3, 2) and not np.allclose(scores.sum(axis=1), 1.0)  # sigmoid
    held_out = tmp_path / "held.csv"
    held_out.write_text(
        "\n".join(
            f"{p},{'logo' if label == 'branded' else ''}"
            for label in ("branded", "plain")
            for p in sorted((logo_photos["test"] / label).iterdir())
        )
    )
    evaluated = evaluate_labelset(settings, labelset, held_out)
    assert evaluated.metrics.labels["logo"].support == 20
    assert evaluated.metrics.labels["logo"].precision >= 0.8
