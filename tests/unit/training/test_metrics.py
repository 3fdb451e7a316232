"""Thresholds calibrated for precision, and the numbers `tagger labels eval` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tagger.training.metrics import calibrate, confusion_png, evaluate


def test_threshold_is_the_lowest_score_that_keeps_the_precision_target() -> None:
    # scores of one label, best first: 9 right, then a wrong one, then 3 right, then wrong ones
    truth = [1] * 9 + [0] + [1] * 3 + [0] * 7
    scores = np.linspace(0.95, 0.05, len(truth), dtype=np.float32)[:, None]
    targets = np.asarray(truth, np.float32)[:, None]
    found = calibrate(scores, targets, ["logo"], 0.9)["logo"]
    kept = scores[:, 0] >= found.threshold
    precision = targets[kept, 0].mean()
    assert precision >= 0.9 and found.precision_target_met
    assert kept.sum() == 13  # 12 of 13: the deepest cut still at 0.9
    assert found.recall == 1.0 and found.support == 12


def test_a_label_that_never_reaches_the_target_is_flagged() -> None:
    scores = np.asarray([[0.9], [0.8], [0.7], [0.6]], np.float32)
    targets = np.asarray([[0], [1], [0], [1]], np.float32)
    found = calibrate(scores, targets, ["logo"], 0.9)["logo"]
    assert not found.precision_target_met


def test_exclusive_metrics_and_confusion_png(tmp_path: Path) -> None:
    labels = ["bag", "boot", "coat"]
    truth = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    scores = np.asarray(
        [
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.6, 0.3],
            [0, 0, 1],
            [0.5, 0, 0.5],
        ],
        np.float32,
    )
    metrics = evaluate(scores, truth, labels, {"bag": 0.5, "boot": 0.5, "coat": 0.5}, multi=False)
    assert metrics.accuracy == round(4 / 6, 4)
    assert metrics.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics.labels["boot"].precision == round(2 / 3, 4)
    assert metrics.labels["boot"].recall == 1.0
    png = confusion_png(metrics.confusion, labels, tmp_path / "confusion.png")
    with Image.open(png) as image:
        assert image.width > 3 * 40 and image.height > 3 * 40
        # the diagonal cell of 'boot' (2 of 2) is fully shaded blue
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels[:, :, 2] > 200).any() and (
        (pixels[:, :, 0] < 60) & (pixels[:, :, 2] > 200)
    ).any()


def test_multi_label_metrics_count_every_label() -> None:
    truth = np.asarray([[1, 1], [1, 0], [0, 0]], np.float32)
    scores = np.asarray([[0.9, 0.8], [0.7, 0.6], [0.2, 0.1]], np.float32)
    metrics = evaluate(scores, truth, ["cup", "logo"], {"cup": 0.5, "logo": 0.5}, multi=True)
    assert metrics.accuracy is None and metrics.confusion is None
    assert metrics.labels["logo"].precision == 0.5 and metrics.labels["cup"].recall == 1.0
    assert metrics.micro_f1 == round(2 * 3 / (4 + 3), 4)
