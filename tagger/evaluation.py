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

import numpy as np
import numpy.typing as npt
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


class SimilarityReport(BaseModel):
    """precision@k of "more like this" on labelled photos: the share of a photo's k nearest
    photos that share its friendly tag (``dog``) and, second, its top-level group
    (``animal``), over the photos whose tag (group) has at least one other photo in the set."""

    photos: int
    k: int
    queries_by_tag: int
    queries_by_group: int
    precision: dict[str, tuple[float, float]] = Field(
        description="signal -> (by tag, by group); 'signature' is what similar uses"
    )
    best_possible: tuple[float, float] = Field(
        description="a perfect ranking on this set: photos with few mates cap the figure"
    )


def evaluate_similar(
    pipeline: Pipeline, photos: Sequence[tuple[Path, str]], k: int = 10
) -> SimilarityReport:
    """Run the shipped flow over labelled photos and rank every photo's neighbours by each
    signal: the signature ``similar`` uses, and each of its parts and the hashtag-style tag
    sets alone, for comparison."""
    classifier = pipeline.analyzer("classify")
    if not isinstance(classifier, ClassifyAnalyzer):
        raise ConfigError("eval-similar needs the classify analyser in TAGGER_ANALYZERS")
    by_wnid = {
        classifier.vocabulary.entry(i).wnid: classifier.vocabulary.entry(i)
        for i in range(len(classifier.vocabulary))
    }
    truth = {str(path.resolve()): by_wnid[wnid] for path, wnid in photos if wnid in by_wnid}
    results = [
        r
        for batch in pipeline.tag_stream(list(truth))
        for r in batch
        if r.status is Status.TAGGED and r.signature is not None
    ]
    tags = np.array([truth[r.ref].tag for r in results])
    groups = np.array([(truth[r.ref].parents or (truth[r.ref].tag,))[-1] for r in results])
    signatures = np.array([r.signature for r in results], np.float64)
    size = classifier.runtime.artifact.manifest.embedding_size
    cut = [size, size + len(classifier.vocabulary.tag_names)]
    parts = np.split(signatures, cut, axis=1)
    names = ("embedding", "tag scores", "group scores")
    signals = {"signature": signatures @ signatures.T}
    for name, part in zip(names, parts, strict=True):
        unit = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        signals[name] = unit @ unit.T
    signals["tag sets (hashtags)"] = _jaccard([set(r.tag_names()) for r in results])
    signals["random"] = np.random.default_rng(0).random((len(results), len(results)))
    precision = {
        name: (_precision_at(scores, tags, k), _precision_at(scores, groups, k))
        for name, scores in signals.items()
    }
    return SimilarityReport(
        photos=len(results),
        k=k,
        queries_by_tag=_queries(tags),
        queries_by_group=_queries(groups),
        precision=precision,
        best_possible=(_best(tags, k), _best(groups, k)),
    )


def _jaccard(sets: Sequence[set[str]]) -> npt.NDArray[np.float64]:
    scores = np.zeros((len(sets), len(sets)))
    for i, first in enumerate(sets):
        for j, second in enumerate(sets):
            union = len(first | second)
            scores[i, j] = len(first & second) / union if union else 0.0
    return scores


def _queries(labels: npt.NDArray[np.str_]) -> int:
    return sum(1 for label in labels if (labels == label).sum() >= 2)


def _precision_at(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.str_], k: int) -> float:
    ranked = scores.copy()
    np.fill_diagonal(ranked, -np.inf)
    values = [
        float((labels[np.argsort(-ranked[i], kind="stable")[:k]] == labels[i]).mean())
        for i in range(len(labels))
        if (labels == labels[i]).sum() >= 2
    ]
    return float(np.mean(values)) if values else 0.0


def _best(labels: npt.NDArray[np.str_], k: int) -> float:
    values = [
        min(k, int((labels == label).sum()) - 1) / k
        for label in labels
        if (labels == label).sum() >= 2
    ]
    return float(np.mean(values)) if values else 0.0
