"""What a user hands `tagger train`, and every way it can be wrong, as one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger.training.dataset import DatasetError, read_dataset


def folders(root: Path, counts: dict[str, int], suffix: str = ".jpg") -> Path:
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (root / label / f"{index}{suffix}").write_bytes(b"x")
    return root


def test_a_folder_per_label_gives_sorted_labels_and_ignores_non_photos(tmp_path: Path) -> None:
    root = folders(tmp_path / "photos", {"SUV": 5, "sedan": 6})
    (root / "sedan" / "notes.txt").write_text("not a photo")
    (root / "stray.jpg").write_bytes(b"x")
    dataset = read_dataset(root, multi=False, min_photos=5)
    assert dataset.labels == ["sedan", "suv"]
    assert dataset.counts() == {"sedan": 6, "suv": 5}
    assert all(Path(e.ref).is_absolute() for e in dataset.examples)
    assert any("notes.txt" in name for name in dataset.ignored)
    assert any("stray.jpg" in name for name in dataset.ignored)


@pytest.mark.parametrize(
    ("counts", "multi", "message"),
    [
        ({"sedan": 8}, False, "only one label (sedan)"),
        ({"sedan": 8, "suv": 3}, False, "too few photos for: suv (3)"),
        ({}, False, "no label folders"),
    ],
)
def test_bad_folders_say_what_to_fix(
    tmp_path: Path, counts: dict[str, int], multi: bool, message: str
) -> None:
    root = folders(tmp_path / "photos", counts)
    root.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(root, multi=multi, min_photos=5)


def test_folders_that_are_the_same_label_are_refused(tmp_path: Path) -> None:
    root = folders(tmp_path / "photos", {"Ankle Boot": 5, "ankle  boot": 5})
    with pytest.raises(DatasetError, match="same label 'ankle boot'"):
        read_dataset(root, multi=False, min_photos=5)


def test_a_csv_with_relative_paths_urls_and_several_labels_per_photo(tmp_path: Path) -> None:
    lines = ["ref,label"]
    for index in range(6):
        lines += [f"a{index}.jpg,logo", f"a{index}.jpg,cup"]
        lines += [f"s3://bucket/b{index}.jpg,cup", f"https://example.com/c{index}.jpg,"]
    path = tmp_path / "refs.csv"
    path.write_text("\n".join(lines) + "\n")
    dataset = read_dataset(path, multi=True, min_photos=5)
    assert dataset.labels == ["cup", "logo"]
    assert dataset.counts() == {"cup": 12, "logo": 6}
    by_ref = {e.ref: e.labels for e in dataset.examples}
    assert by_ref[str(tmp_path / "a0.jpg")] == ("cup", "logo")
    assert by_ref["https://example.com/c0.jpg"] == ()  # a negative
    with pytest.raises(DatasetError, match="several labels"):
        read_dataset(path, multi=False, min_photos=5)


def test_a_malformed_csv_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "refs.csv"
    path.write_text("a.jpg,cup\nb.jpg\n")
    with pytest.raises(DatasetError, match="row 2: want 'ref,label'"):
        read_dataset(path, multi=False, min_photos=1)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder or file"):
        read_dataset(tmp_path / "nowhere", multi=False, min_photos=5)
