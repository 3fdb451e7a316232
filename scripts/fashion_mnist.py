"""Fashion-MNIST as folders of photos, the way a user hands tagger labelled photos.

Debian's ``dataset-fashion-mnist`` (MIT; 70 000 28x28 greyscale product photos in 10
classes) installs the idx files under ``/usr/share/datasets/fashion-mnist``; nothing is
downloaded. ``export`` writes ``train/<label>/*.png`` and ``test/<label>/*.png`` with a fixed
seed, so ``tagger train DEST/train --name fashion`` and ``tagger labels eval fashion
DEST/test`` run on real files. ``curve`` runs those two commands for several training sizes
and prints the learning curve.

    python scripts/fashion_mnist.py export /tmp/fm --per-class 200 --test-per-class 100
    python scripts/fashion_mnist.py curve /tmp/fm-curve --sizes 50,100,200,500
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import typer
from PIL import Image

DATASET = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip

app = typer.Typer(add_completion=False, no_args_is_help=True)


def read_split(
    split: str, root: Path = DATASET
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Images (N, 28, 28) and labels (N,) of ``train`` or ``t10k`` from the idx files."""
    images_path = root / f"{split}-images-idx3-ubyte.gz"
    labels_path = root / f"{split}-labels-idx1-ubyte.gz"
    if not images_path.is_file():
        raise SystemExit(
            f"no Fashion-MNIST in {root}; install it with: apt-get install dataset-fashion-mnist"
        )
    with gzip.open(images_path) as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_path) as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    return images, labels


def _pick(labels: npt.NDArray[np.uint8], per_class: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in range(len(CLASSES)):
        indices = np.flatnonzero(labels == label)
        chosen.extend(int(i) for i in rng.choice(indices, per_class, replace=False))
    return chosen


def write_folders(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], indices: list[int], dest: Path
) -> int:
    for index in indices:
        folder = dest / CLASSES[labels[index]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index], "L").save(folder / f"{index:05d}.png")
    return len(indices)


def export_split(dest: Path, per_class: int, test_per_class: int, seed: int) -> None:
    train_images, train_labels = read_split("train")
    test_images, test_labels = read_split("t10k")
    write_folders(train_images, train_labels, _pick(train_labels, per_class, seed), dest / "train")
    write_folders(
        test_images, test_labels, _pick(test_labels, test_per_class, seed + 1), dest / "test"
    )


@app.command()
def export(
    dest: Path,
    per_class: Annotated[int, typer.Option(min=1)] = 200,
    test_per_class: Annotated[int, typer.Option(min=1)] = 100,
    seed: int = 0,
) -> None:
    """Write DEST/train/<label>/*.png (from the training split) and DEST/test (from t10k)."""
    export_split(dest, per_class, test_per_class, seed)
    train, test = per_class * len(CLASSES), test_per_class * len(CLASSES)
    typer.echo(f"{train} training and {test} test photos in {dest}")


def _tagger(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tagger", *args], check=True, capture_output=True, text=True
    )
    return done.stdout


@app.command()
def curve(
    work: Path,
    sizes: str = "50,100,200,500",
    test_per_class: int = 300,
    fine_tune: bool = False,
) -> None:
    """Train and evaluate one label set per training size; prints accuracy and train time."""
    rows = []
    for size in (int(part) for part in sizes.split(",")):
        dest = work / f"n{size}"
        if not (dest / "train").is_dir():
            export_split(dest, size, test_per_class, seed=0)
        name = f"fashion-{size}{'-ft' if fine_tune else ''}"
        started = time.perf_counter()
        _tagger(
            "train", str(dest / "train"), "--name", name, *(["--fine-tune"] if fine_tune else [])
        )
        seconds = time.perf_counter() - started
        report = json.loads(_tagger("labels", "eval", name, str(dest / "test"), "--json"))
        rows.append((size, report["accuracy"], seconds))
        typer.echo(f"{size:>5} per class  accuracy {report['accuracy']:.3f}  train {seconds:.0f} s")
    typer.echo(
        "per class | held-out accuracy | train seconds (embeddings already cached are reused)"
    )
    for size, accuracy, seconds in rows:
        typer.echo(f"{size:>9} | {accuracy:.3f} | {seconds:.0f}")


if __name__ == "__main__":
    app()
