"""``tagger train`` and ``tagger labels eval``: labelled photos in, a verified label set out.

The flow: read the labelled photos (:mod:`.dataset`), embed them through the backbone
(:mod:`.features`, cached), fold duplicate photos, split off a validation share per label with
the seed, train the head (:mod:`.head`) or fine-tune the backbone (:mod:`.finetune`), score the
validation photos with the exported ONNX file exactly as a worker will, calibrate thresholds
and write the artifact under ``<TAGGER_LABELSETS_DIR>/<name>/<version>/``.

Photos are ordered by content hash before the split, so the same photos under other names or
in another listing order give the same label set, version included.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from tagger.config import Settings
from tagger.model.labelset import (
    Backbone,
    LabelSet,
    LabelSetManifest,
    Metrics,
    TrainingData,
    check_name,
    load_labelset,
    version_dir,
)
from tagger.model.registry import MANIFEST_FILE, MODEL_FILE, VERSION_CHARS, sha256_file
from tagger.model.runtime import open_session
from tagger.training.dataset import (
    Dataset,
    DatasetError,
    Example,
    read_dataset,
    require_photos,
)
from tagger.training.features import Extracted, FeatureExtractor, shown
from tagger.training.head import INPUT_NAME, OUTPUT_NAME, train_head
from tagger.training.metrics import calibrate, confusion_png, evaluate

FloatArray = npt.NDArray[np.float32]
VALIDATION_PNG = "confusion-validation.png"
EVAL_PNG = "confusion-eval.png"
FINE_TUNE_BLOCKS = 2


class TrainOptions(BaseModel):
    name: str
    multi: bool = False
    fine_tune: bool = False


class Duplicate(BaseModel):
    """Photos with the same bytes; ``dropped`` when their labels disagree (exclusive sets)."""

    refs: list[str]
    labels: list[str]
    dropped: bool


class TrainReport(BaseModel):
    labelset: str = Field(description="name@version")
    path: Path
    photos: int
    validation_photos: int
    failures: list[tuple[str, str]] = Field(description="(ref, reason) of unreadable photos")
    duplicates: list[Duplicate]
    ignored: list[str]
    computed: int = Field(description="embeddings computed now (the rest came from the cache)")
    cached: int
    epochs: int
    seconds: float
    metrics: Metrics


class EvalReport(BaseModel):
    labelset: str
    photos: int
    failures: list[tuple[str, str]]
    metrics: Metrics
    confusion_png: Path | None


Progress = Callable[[int], None]


def train_labelset(
    settings: Settings,
    source: str | Path,
    options: TrainOptions,
    progress: Progress | None = None,
) -> TrainReport:
    started = time.perf_counter()
    name = check_name(options.name)
    config = settings.train
    dataset = read_dataset(source, multi=options.multi, min_photos=config.min_photos)
    if options.fine_tune:
        few = {k: n for k, n in dataset.counts().items() if n < config.fine_tune_min_photos}
        if few:
            raise DatasetError(
                f"--fine-tune needs at least {config.fine_tune_min_photos} photos per label "
                f"(fewer: {', '.join(sorted(few))}); below that the frozen head does as well"
            )
    extractor = FeatureExtractor(settings)
    try:
        refs = [example.ref for example in dataset.examples]
        extracted = extractor.extract(refs, keep_pixels=options.fine_tune, progress=progress)
    finally:
        extractor.close()
    examples, rows, duplicates = _folded(dataset.examples, extracted, options.multi)
    readable = Dataset(source=dataset.source, examples=examples, labels=dataset.labels)
    unread = f"; {len(extracted.failures)} photos could not be read" if extracted.failures else ""
    require_photos(readable.counts(), config.min_photos, "readable, distinct photos", unread)
    targets = _targets(examples, dataset.labels)
    vectors = extracted.matrix()[rows]
    train_rows, val_rows = _split(targets, options.multi, config.validation_split, config.seed)
    weights = None if options.multi else _class_weights(targets[train_rows])
    root = settings.labelsets_root / name
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".train-", dir=root))
    try:
        model_path = staging / MODEL_FILE
        if options.fine_tune:
            from tagger.training.finetune import fine_tune

            pixels = np.stack([extracted.pixels[row] for row in rows])
            tuned = fine_tune(
                pixels[train_rows],
                targets[train_rows],
                pixels[val_rows],
                targets[val_rows],
                model_path,
                arch=extractor.artifact.manifest.arch,
                multi=options.multi,
                class_weight=weights,
                blocks=FINE_TUNE_BLOCKS,
                seed=config.seed,
            )
            epochs = tuned.epochs
            val_scores = _score(model_path, "input", pixels[val_rows])
        else:
            head = train_head(
                vectors[train_rows],
                targets[train_rows],
                vectors[val_rows],
                targets[val_rows],
                model_path,
                multi=options.multi,
                class_weight=weights,
                seed=config.seed,
                max_epochs=config.max_epochs,
                patience=config.patience,
            )
            epochs = head.epochs
            val_scores = head.val_scores
        val_targets = targets[val_rows]
        calibrated = calibrate(val_scores, val_targets, dataset.labels, config.precision_target)
        thresholds = {label: found.threshold for label, found in calibrated.items()}
        metrics = evaluate(val_scores, val_targets, dataset.labels, thresholds, multi=options.multi)
        for label, found in calibrated.items():
            metrics.labels[label].precision_target_met = found.precision_target_met
        if metrics.confusion is not None:
            confusion_png(metrics.confusion, dataset.labels, staging / VALIDATION_PNG)
        digest = sha256_file(model_path)
        backbone = extractor.artifact.manifest
        manifest = LabelSetManifest(
            version=digest[:VERSION_CHARS],
            sha256=digest,
            name=name,
            kind="fine-tuned" if options.fine_tune else "head",
            multi=options.multi,
            labels=dataset.labels,
            thresholds=thresholds,
            precision_target=config.precision_target,
            input_name="input" if options.fine_tune else INPUT_NAME,
            output_name=OUTPUT_NAME,
            preprocess=backbone.preprocess if options.fine_tune else None,
            backbone=Backbone(
                name=backbone.name,
                version=extractor.backbone_version,
                embedding_size=backbone.embedding_size,
                licence=backbone.weights.licence,
                weights_package=f"{backbone.weights.package}=={backbone.weights.package_version}",
            ),
            data=TrainingData(
                sha256=_data_hash(examples, [extracted.hashes[row] for row in rows]),
                photos=len(examples),
                per_label=_counts(targets, dataset.labels),
                validation_photos=len(val_rows),
                skipped=len(extracted.failures),
            ),
            metrics=metrics,
            training={
                "seed": config.seed,
                "validation_split": config.validation_split,
                "epochs": epochs,
                "class_weights": not options.multi,
                **({"fine_tune_blocks": FINE_TUNE_BLOCKS} if options.fine_tune else {}),
            },
            builder=_builder_versions(),
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), "utf-8")
        destination = version_dir(settings.labelsets_root, name, manifest.version)
        if destination.exists():  # the same data and seed made it before: same version
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    labelset = load_labelset(destination)
    return TrainReport(
        labelset=labelset.spec,
        path=destination,
        photos=len(examples),
        validation_photos=len(val_rows),
        failures=extracted.failures,
        duplicates=duplicates,
        ignored=dataset.ignored,
        computed=extracted.computed,
        cached=extracted.cached,
        epochs=epochs,
        seconds=round(time.perf_counter() - started, 2),
        metrics=metrics,
    )


def evaluate_labelset(
    settings: Settings, labelset: LabelSet, source: str | Path, progress: Progress | None = None
) -> EvalReport:
    """The label set on held-out labelled photos, as a worker applies it."""
    manifest = labelset.manifest
    dataset = read_dataset(source, multi=manifest.multi, min_photos=1, for_training=False)
    unknown = sorted(set(dataset.labels) - set(manifest.labels))
    if unknown:
        raise DatasetError(
            f"{', '.join(unknown)}: not labels of {labelset.spec} ({', '.join(manifest.labels)})"
        )
    extractor = FeatureExtractor(settings)
    try:
        fine_tuned = manifest.kind == "fine-tuned"
        extracted = extractor.extract(
            [e.ref for e in dataset.examples], keep_pixels=fine_tuned, progress=progress
        )
    finally:
        extractor.close()
    if not extracted.rows:
        raise DatasetError(f"none of the {len(dataset.examples)} photos could be read")
    examples = [dataset.examples[row] for row in extracted.rows]
    inputs = np.stack(extracted.pixels) if fine_tuned else extracted.matrix()
    scores = _score(labelset.onnx_path, manifest.input_name, inputs)
    targets = _targets(examples, manifest.labels)
    metrics = evaluate(scores, targets, manifest.labels, manifest.thresholds, multi=manifest.multi)
    png = None
    if metrics.confusion is not None:
        png = confusion_png(metrics.confusion, manifest.labels, labelset.path / EVAL_PNG)
    return EvalReport(
        labelset=labelset.spec,
        photos=len(examples),
        failures=extracted.failures,
        metrics=metrics,
        confusion_png=png,
    )


# -- the steps ---------------------------------------------------------------------------------


def _folded(
    examples: Sequence[Example], extracted: Extracted, multi: bool
) -> tuple[list[Example], list[int], list[Duplicate]]:
    """One example per distinct photo, ordered by content hash. Copies with the same labels
    (or, for ``--multi``, any labels: their union) count once, so a copy cannot sit in both
    the training and the validation split; copies whose exclusive labels disagree are
    dropped, since either label would be taught wrong."""
    groups: dict[str, list[int]] = {}
    for position, digest in enumerate(extracted.hashes):
        groups.setdefault(digest, []).append(position)
    kept: list[tuple[str, Example, int]] = []
    duplicates: list[Duplicate] = []
    for digest, positions in groups.items():
        members = [examples[extracted.rows[p]] for p in positions]
        labels = sorted({label for member in members for label in member.labels})
        conflict = not multi and len({member.labels for member in members}) > 1
        if len(members) > 1:
            refs = [shown(member.ref) for member in members]
            duplicates.append(Duplicate(refs=refs, labels=labels, dropped=conflict))
        if not conflict:
            example = Example(ref=members[0].ref, labels=tuple(labels))
            kept.append((digest, example, positions[0]))
    kept.sort(key=lambda item: item[0])
    return [item[1] for item in kept], [item[2] for item in kept], duplicates


def _targets(examples: Sequence[Example], labels: Sequence[str]) -> FloatArray:
    column = {label: i for i, label in enumerate(labels)}
    targets = np.zeros((len(examples), len(labels)), np.float32)
    for row, example in enumerate(examples):
        for label in example.labels:
            targets[row, column[label]] = 1.0
    return targets


def _split(
    targets: FloatArray, multi: bool, share: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Validation rows: ``share`` of each label (at least one) for exclusive sets, so every
    label gets a threshold; a seeded share of all photos for multi-label sets."""
    rng = np.random.default_rng(seed)
    if multi:
        order = rng.permutation(len(targets))
        count = max(1, math.ceil(share * len(targets)))
        val = np.sort(order[:count])
    else:
        picked: list[int] = []
        for column in range(targets.shape[1]):
            rows = np.flatnonzero(targets[:, column] > 0.5)
            count = max(1, math.ceil(share * len(rows)))
            picked.extend(int(row) for row in rng.permutation(rows)[:count])
        val = np.sort(np.asarray(picked, np.int64))
    train = np.setdiff1d(np.arange(len(targets)), val)
    return train.astype(np.int64), val.astype(np.int64)


def _class_weights(targets: FloatArray) -> dict[int, float]:
    """Inverse frequency, so a label with 50 photos beside one with 500 is not ignored."""
    counts = targets.sum(axis=0)
    total = float(counts.sum())
    return {i: round(total / (len(counts) * float(n)), 6) for i, n in enumerate(counts) if n > 0}


def _score(model_path: Path, input_name: str, inputs: FloatArray, batch: int = 64) -> FloatArray:
    session = open_session(model_path)
    parts = [
        np.asarray(session.run([OUTPUT_NAME], {input_name: inputs[i : i + batch]})[0], np.float32)
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _data_hash(examples: Sequence[Example], hashes: Sequence[str]) -> str:
    lines = sorted(f"{h}\t{','.join(e.labels)}" for h, e in zip(hashes, examples, strict=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _counts(targets: FloatArray, labels: Sequence[str]) -> dict[str, int]:
    return {label: int(n) for label, n in zip(labels, targets.sum(axis=0), strict=True)}


def _builder_versions() -> dict[str, str]:
    from tagger.model.packages import tool_versions

    return tool_versions("tensorflow-cpu", "keras", "tf2onnx", "onnxruntime")
