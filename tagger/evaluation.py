"""Accuracy of the deployed flow on labelled photos named ``<wnid>_*.JPEG``.

It runs the very pipeline users run (file read, decode, preprocess, ONNX, postprocess), so the
figure it prints is the accuracy of what is shipped, not of a separate research script.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field

from tagger.analyzers.classify import ClassifyAnalyzer
from tagger.errors import ConfigError
from tagger.pipeline import Pipeline
from tagger.schemas import Status, TagResult

_WNID = re.compile(r"^(n\d{8})_")
PEOPLE_LABELS = ("data", "people_check_imagenet_dev.tsv")


class SafetyReport(BaseModel):
    """The safety analyser on photos that are all safe to show: how low it scores them."""

    threshold: float
    median_nsfw: float
    max_nsfw: float
    flagged: list[str] = Field(description="file names at or above the threshold")
    flagged_fraction: float


class PeopleReport(BaseModel):
    """``person`` precision and recall on the photos of the folder that have a hand label."""

    labels: str
    labelled: int
    with_person: int
    true_positives: int
    false_positives: list[str]
    missed: list[str]
    precision: float
    recall: float


class EvalReport(BaseModel):
    model: str
    model_version: str
    analyzers: dict[str, str]
    photos: int
    failed: int
    top1: float
    top5: float
    seconds: float
    images_per_second: float
    safety: SafetyReport | None = None
    people: PeopleReport | None = None


def wnid_of(path: Path) -> str | None:
    match = _WNID.match(path.name)
    return match.group(1) if match else None


def labelled_photos(folder: Path) -> list[tuple[Path, str]]:
    photos = []
    for path in sorted(folder.iterdir()):
        wnid = wnid_of(path)
        if wnid and path.is_file():
            photos.append((path, wnid))
    return photos


def evaluate(
    pipeline: Pipeline,
    photos: Sequence[tuple[Path, str]],
    on_batch: Callable[[int], None] | None = None,
) -> EvalReport:
    classifier = pipeline.analyzer("classify")
    if not isinstance(classifier, ClassifyAnalyzer):
        raise ConfigError("the ImageNet eval needs the classify analyser in TAGGER_ANALYZERS")
    truth = {str(path.resolve()): wnid for path, wnid in photos}
    top1 = top5 = failed = 0
    tagged: list[TagResult] = []
    started = time.perf_counter()
    for batch in pipeline.tag_stream(list(truth)):
        for result in batch:
            if result.status != Status.TAGGED:
                failed += 1
                continue
            tagged.append(result)
            predicted = [c.wnid for c in result.classes[:5]]
            top1 += int(predicted[:1] == [truth[result.ref]])
            top5 += int(truth[result.ref] in predicted)
        if on_batch:
            on_batch(len(batch))
    seconds = time.perf_counter() - started
    count = max(len(photos), 1)
    return EvalReport(
        model=classifier.runtime.artifact.manifest.name,
        model_version=classifier.version,
        analyzers=dict(pipeline.versions),
        photos=len(photos),
        failed=failed,
        top1=top1 / count,
        top5=top5 / count,
        seconds=seconds,
        images_per_second=len(photos) / seconds if seconds else 0.0,
        safety=safety_report(tagged, pipeline.settings.safety.threshold),
        people=people_report(tagged, people_labels()),
    )


def safety_report(results: Sequence[TagResult], threshold: float) -> SafetyReport | None:
    scores = {Path(r.ref).name: r.nsfw for r in results if r.nsfw is not None}
    if not scores:
        return None
    flagged = sorted(name for name, score in scores.items() if score >= threshold)
    return SafetyReport(
        threshold=threshold,
        median_nsfw=statistics.median(scores.values()),
        max_nsfw=max(scores.values()),
        flagged=flagged,
        flagged_fraction=len(flagged) / len(scores),
    )


def people_labels() -> dict[str, bool]:
    """The shipped hand labels: file name -> a person is clearly visible (``unsure`` left out)."""
    text = resources.files("tagger").joinpath(*PEOPLE_LABELS).read_text("utf-8")
    labels: dict[str, bool] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, label = line.split("\t")
        if label in ("yes", "no"):
            labels[name] = label == "yes"
    return labels


def people_report(results: Sequence[TagResult], labels: dict[str, bool]) -> PeopleReport | None:
    """Precision and recall of the ``person`` tag, when the detector ran and the folder's photos
    are the labelled ones (at least half of the labels found)."""
    found = {Path(r.ref).name: "person" in r.tag_names() for r in results if r.counts is not None}
    judged = {name: labels[name] for name in found if name in labels}
    if not judged or len(judged) < len(labels) / 2:
        return None
    hits = [name for name, person in judged.items() if person and found[name]]
    false = sorted(name for name, person in judged.items() if not person and found[name])
    missed = sorted(name for name, person in judged.items() if person and not found[name])
    with_person = sum(judged.values())
    return PeopleReport(
        labels="/".join(PEOPLE_LABELS),
        labelled=len(judged),
        with_person=with_person,
        true_positives=len(hits),
        false_positives=false,
        missed=missed,
        precision=len(hits) / max(len(hits) + len(false), 1),
        recall=len(hits) / max(with_person, 1),
    )
