"""Fine-tuning on two synthetic classes: the export runs, separates them and is reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tagger.model.runtime import open_session
from tagger.schemas import PreprocessSpec
from tagger.training.finetune import Augmentation, FineTuneResult, augment, fine_tune

SIZE = 224
PER_CLASS = 16


def _photos(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stripes (class 0) and dots (class 1) of random period, phase and colour, normalised
    like :func:`tagger.imaging.preprocess` output."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images, labels = [], []
    for label in (0, 1):
        for _ in range(PER_CLASS):
            period = rng.uniform(12, 28)
            phase = rng.uniform(0, period, 2)
            if label == 0:
                mask = ((x + phase[0]) % period) < period / 2
            else:
                dy = (y + phase[0]) % period - period / 2
                dx = (x + phase[1]) % period - period / 2
                mask = dx**2 + dy**2 < (period / 4) ** 2
            ink, paper = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            pixels = np.where(mask[..., None], ink, paper).astype(np.float32)
            images.append((pixels - 127.0) / 128.0)
            labels.append(label)
    targets = np.eye(2, dtype=np.float32)[labels]
    return np.stack(images).astype(np.float32), targets


def _train(destination: Path) -> tuple[FineTuneResult, np.ndarray, np.ndarray]:
    """Train on 24 photos (8 for validation); return the result and the training photos."""
    images, targets = _photos(0)
    val = np.arange(len(images)) % 4 == 0  # 8 of 32 photos, 4 of each class
    result = fine_tune(
        images[~val],
        targets[~val],
        images[val],
        targets[val],
        destination,
        arch="lite0",
        blocks=1,
        epochs=2,
        seed=3,
    )
    return result, images[~val], targets[~val]


def test_fine_tuning_exports_a_reproducible_separating_model(tmp_path: Path) -> None:
    """One test for all three, since each training costs ~20 s (most of it the ONNX export)."""
    result, images, targets = _train(tmp_path / "a.onnx")

    assert result.onnx_path == tmp_path / "a.onnx" and result.onnx_path.is_file()
    assert 0 <= result.epochs <= 2 and np.isfinite(result.val_loss)
    session = open_session(result.onnx_path)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["scores"]
    scores = session.run(["scores"], {"input": images})[0]
    assert scores.shape == (len(images), 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((scores.argmax(axis=1) == targets.argmax(axis=1)).mean())
    assert accuracy > 0.9

    again, _, _ = _train(tmp_path / "b.onnx")
    assert again.onnx_path.read_bytes() == result.onnx_path.read_bytes()


def test_augmentation_follows_the_seed_and_stays_in_the_pixel_range() -> None:
    images, _ = _photos(1)
    spec = PreprocessSpec(size=SIZE)
    first = augment(images[:4], np.random.default_rng(7), spec, Augmentation())
    second = augment(images[:4], np.random.default_rng(7), spec, Augmentation())

    assert first.shape == (4, SIZE, SIZE, 3) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert first.min() >= -127 / 128 and first.max() <= 1.0
    assert not np.allclose(first, images[:4])
