"""Labelled photos as a user hands them over: one folder per label, or a CSV of ``ref,label``.

A folder ``photos/`` with ``photos/sedan/*.jpg`` and ``photos/suv/*.jpg`` is the common case;
a CSV names photos anywhere tagger can fetch (``s3://``, ``https://``, paths relative to the
CSV), one ``ref,label`` line per label, so a multi-label photo has several lines and, with
``--multi``, a line with an empty label is a photo with none of the labels (a negative).

Everything a user can get wrong here is a :class:`DatasetError` with a message that says what
to fix, checked before any photo is read.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from tagger.formats import is_image_name

LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9 _'&.+-]{0,62}$")


class DatasetError(Exception):
    """The labelled photos cannot make a label set; the message is fit to show a user."""


class Example(BaseModel):
    ref: str
    labels: tuple[str, ...]


class Dataset(BaseModel):
    """Photos with their labels, and every label in a fixed (sorted) order."""

    source: str
    examples: list[Example]
    labels: list[str]
    ignored: list[str] = Field(
        default_factory=list, description="files that are not photos, by name"
    )

    def counts(self) -> dict[str, int]:
        found = Counter(label for example in self.examples for label in example.labels)
        return {label: found[label] for label in self.labels}


def normalise_label(text: str) -> str:
    """A folder or CSV label as a tag: lower case, single spaces (``Ankle_Boot`` and
    ``ankle boot`` are different folders but one would be a surprise; they are refused)."""
    label = " ".join(text.strip().lower().split())
    if not LABEL_PATTERN.fullmatch(label):
        raise DatasetError(
            f"label {text!r}: use letters, digits, spaces, '-', '_', '.', '+', '&' "
            "(at most 63), starting with a letter or digit"
        )
    return label


def read_dataset(
    source: str | Path, *, multi: bool, min_photos: int, for_training: bool = True
) -> Dataset:
    """The photos and labels in ``source``; ``for_training`` applies the rules a label set
    needs (an eval set may hold a single label, or few photos of one)."""
    path = Path(source).expanduser()
    if path.is_dir():
        dataset = _from_folder(path)
    elif path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        dataset = _from_csv(path)
    elif path.exists():
        raise DatasetError(f"{path}: give a folder with one sub-folder per label, or a .csv")
    else:
        raise DatasetError(f"{path}: no such folder or file")
    if for_training:
        check(dataset, multi=multi, min_photos=min_photos)
    elif not dataset.examples:
        raise DatasetError(f"{dataset.source}: no photos found (by extension: jpg, png, …)")
    return dataset


def _from_folder(root: Path) -> Dataset:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in root.iterdir() if p.is_file() and is_image_name(p.name)]
    if not folders:
        hint = f" ({len(loose)} photos lie directly in it)" if loose else ""
        raise DatasetError(
            f"{root} has no label folders{hint}: put each label's photos in a sub-folder "
            "named after the label (photos/sedan/*.jpg, photos/suv/*.jpg)"
        )
    by_label: dict[str, Path] = {}
    examples: list[Example] = []
    ignored: list[str] = [f"{name} (outside the label folders)" for name in sorted(loose)]
    for folder in folders:
        label = normalise_label(folder.name)
        if label in by_label:
            raise DatasetError(
                f"folders {by_label[label].name!r} and {folder.name!r} are the same label "
                f"{label!r}; merge them"
            )
        by_label[label] = folder
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if is_image_name(file.name):
                examples.append(Example(ref=str(file.resolve()), labels=(label,)))
            elif not file.name.startswith("."):
                ignored.append(str(file.relative_to(root)))
    return Dataset(
        source=str(root), examples=_merged(examples), labels=sorted(by_label), ignored=ignored
    )


def _from_csv(path: Path) -> Dataset:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = list(csv.reader(path.read_text("utf-8-sig").splitlines(), delimiter=delimiter))
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["ref", "label"]:
        rows = rows[1:]
    examples: list[Example] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise DatasetError(f"{path}, row {number}: want 'ref,label', got {len(row)} fields")
        ref, label = row[0].strip(), row[1].strip()
        if not ref:
            raise DatasetError(f"{path}, row {number}: empty ref")
        examples.append(
            Example(
                ref=_resolved(ref, path.parent),
                labels=(normalise_label(label),) if label else (),
            )
        )
    labels = sorted({label for example in examples for label in example.labels})
    return Dataset(source=str(path), examples=_merged(examples), labels=labels)


def _resolved(ref: str, base: Path) -> str:
    if "://" in ref or ref.startswith("/"):
        return ref
    return str((base / ref).resolve())


def _merged(examples: Iterable[Example]) -> list[Example]:
    """One example per ref, with the union of its labels (a photo listed under two labels)."""
    labels: dict[str, set[str]] = {}
    for example in examples:
        labels.setdefault(example.ref, set()).update(example.labels)
    return [Example(ref=ref, labels=tuple(sorted(found))) for ref, found in labels.items()]


def check(dataset: Dataset, *, multi: bool, min_photos: int) -> None:
    """The rules a label set needs, each with its own message."""
    counts = dataset.counts()
    if not dataset.examples:
        raise DatasetError(f"{dataset.source}: no photos found (by extension: jpg, png, …)")
    if not multi:
        if len(dataset.labels) < 2:
            only = f" ({dataset.labels[0]})" if dataset.labels else ""
            raise DatasetError(
                f"{dataset.source}: only one label{only}; a label set tells labels apart, so "
                "give at least two (or use --multi with photos that have none of the labels)"
            )
        several = [e.ref for e in dataset.examples if len(e.labels) > 1]
        if several:
            raise DatasetError(
                f"{len(several)} photos have several labels (first: {several[0]}); labels are "
                "exclusive unless you train with --multi"
            )
        unlabelled = [e.ref for e in dataset.examples if not e.labels]
        if unlabelled:
            raise DatasetError(
                f"{len(unlabelled)} photos have no label (first: {unlabelled[0]}); photos "
                "without a label are negatives, which only --multi uses"
            )
    else:
        if not dataset.labels:
            raise DatasetError(f"{dataset.source}: no labels")
        always = [label for label, n in counts.items() if n == len(dataset.examples)]
        if always:
            raise DatasetError(
                f"every photo has the label {always[0]!r}; --multi needs photos without it too"
            )
    require_photos(counts, min_photos)


def require_photos(
    counts: dict[str, int], min_photos: int, what: str = "photos", why: str = ""
) -> None:
    """Every label must have ``min_photos``: before any photo is read, and again once the
    unreadable ones and the copies are out (``what`` and ``why`` say which count it is)."""
    few = {label: n for label, n in counts.items() if n < min_photos}
    if few:
        listed = ", ".join(f"{label} ({n})" for label, n in sorted(few.items()))
        raise DatasetError(
            f"too few {what} for: {listed}{why}; every label needs at least {min_photos}"
        )
