"""Thresholds, metrics and the confusion matrix of a label set.

A custom tag is only useful if it can be trusted: a shop that tags "our logo" on photos that
do not show it loses more than it gains. Each label's threshold is therefore calibrated on the
validation split (photos the head did not train on) as the lowest score at which the label's
precision reaches the target (0.9 by default): as much recall as that precision allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from tagger.model.labelset import LabelMetrics, Metrics

FloatArray = npt.NDArray[np.float32]


def calibrate(
    scores: FloatArray, targets: FloatArray, labels: Sequence[str], precision_target: float
) -> dict[str, LabelMetrics]:
    """Per label, the lowest threshold reaching ``precision_target`` on these photos, and the
    precision and recall there. A label that never reaches it gets the threshold of its best
    precision, flagged, so ``labels show`` tells the user which labels need more photos."""
    found: dict[str, LabelMetrics] = {}
    for column, label in enumerate(labels):
        found[label] = _calibrated(scores[:, column], targets[:, column] > 0.5, precision_target)
    return found


def _calibrated(score: FloatArray, truth: npt.NDArray[np.bool_], target: float) -> LabelMetrics:
    positives = int(truth.sum())
    if positives == 0:
        return LabelMetrics(
            precision=0.0, recall=0.0, support=0, threshold=0.5, precision_target_met=False
        )
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(truth[order])
    taken = np.arange(1, len(order) + 1)
    precision = hits / taken
    # a cut may only fall between different scores: equal scores are all tagged or none
    distinct = np.append(score[order][1:] != score[order][:-1], True)
    good = np.flatnonzero((precision >= target) & distinct)
    met = len(good) > 0
    cut = int(good[-1]) if met else int(np.flatnonzero(distinct)[np.argmax(precision[distinct])])
    return LabelMetrics(
        precision=round(float(precision[cut]), 4),
        recall=round(float(hits[cut] / positives), 4),
        support=positives,
        threshold=math.floor(float(score[order][cut]) * 1e6) / 1e6,  # never above the cut
        precision_target_met=met,
    )


def evaluate(
    scores: FloatArray,
    targets: FloatArray,
    labels: Sequence[str],
    thresholds: dict[str, float],
    *,
    multi: bool,
) -> Metrics:
    """How the tags a worker would emit (scores over thresholds; for exclusive sets only the
    best one) compare with the truth; plus top-1 accuracy and the confusion matrix for
    exclusive sets."""
    limits = np.asarray([thresholds[label] for label in labels], np.float32)
    over = scores >= limits
    if not multi:
        best = scores.argmax(axis=1)
        tagged = np.zeros_like(over)
        rows = np.arange(len(scores))
        tagged[rows, best] = over[rows, best]
    else:
        tagged = over
    truth = targets > 0.5
    per_label: dict[str, LabelMetrics] = {}
    for column, label in enumerate(labels):
        emitted, actual = tagged[:, column], truth[:, column]
        true_positive = int((emitted & actual).sum())
        per_label[label] = LabelMetrics(
            precision=round(true_positive / max(1, int(emitted.sum())), 4),
            recall=round(true_positive / max(1, int(actual.sum())), 4),
            support=int(actual.sum()),
            threshold=thresholds[label],
        )
    if multi:
        true_positive = int((tagged & truth).sum())
        f1 = 2 * true_positive / max(1, int(tagged.sum()) + int(truth.sum()))
        return Metrics(micro_f1=round(f1, 4), photos=len(scores), labels=per_label)
    actual_index = targets.argmax(axis=1)
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(confusion, (actual_index, predicted), 1)
    return Metrics(
        accuracy=round(float((predicted == actual_index).mean()), 4),
        photos=len(scores),
        labels=per_label,
        confusion=confusion.tolist(),
    )


def confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """The matrix as a picture: rows the true label, columns the predicted one, each cell
    shaded by its share of the row, so where a label leaks shows at a glance."""
    matrix = np.asarray(confusion, np.float64)
    count = len(labels)
    font = ImageFont.load_default(size=14)
    cell = 44
    margin = 14 + max(int(font.getlength(label)) for label in labels)
    side = margin + cell * count + 10
    image = Image.new("RGB", (side, side + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 4), "columns: predicted, rows: true label", fill="black", font=font)
    top = 24 + margin
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    for row, label in enumerate(labels):
        y = top + row * cell
        draw.text((6, y + cell // 2 - 8), label, fill="black", font=font)
        for column in range(count):
            x = margin + column * cell
            shade = int(255 * (1 - shares[row, column]))
            fill = (shade, shade, 255) if row == column else (255, shade, shade)
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=fill, outline="#999")
            text = str(int(matrix[row, column]))
            colour = "white" if shares[row, column] > 0.6 else "black"
            width = font.getlength(text)
            draw.text((x + (cell - width) / 2, y + cell // 2 - 8), text, fill=colour, font=font)
    for column, label in enumerate(labels):
        x = margin + column * cell + cell // 2
        tag = Image.new("RGBA", (int(font.getlength(label)) + 4, 18), (255, 255, 255, 0))
        ImageDraw.Draw(tag).text((0, 0), label, fill="black", font=font)
        rotated = tag.rotate(90, expand=True)
        image.paste(rotated, (x - 9, top - rotated.height - 4), rotated)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
