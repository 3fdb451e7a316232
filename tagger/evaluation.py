"""Accuracy of the deployed flow on labelled photos named ``<wnid>_*.JPEG``.

It runs the very pipeline users run (file read, decode, preprocess, ONNX, postprocess), so the
figure it prints is the accuracy of what is shipped, not of a separate research script.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from tagger.analyzers.classify import ClassifyAnalyzer
from tagger.errors import ConfigError
from tagger.pipeline import Pipeline
from tagger.schemas import Status

_WNID = re.compile(r"^(n\d{8})_")


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
    started = time.perf_counter()
    for batch in pipeline.tag_stream(list(truth)):
        for result in batch:
            if result.status != Status.TAGGED:
                failed += 1
                continue
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
    )
