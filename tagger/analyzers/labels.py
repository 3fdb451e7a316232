"""The ``labels`` analyser: the active label sets (custom tags from ``tagger train``).

A head-only set is a small matmul on the embedding the ``classify`` analyser already made, so
it needs no pixels (``min_side`` 0): when only label sets changed, the pipeline re-runs this
analyser from the stored result's signature without fetching or decoding the photo again. A
fine-tuned set is a whole network and reads the photo like any other analyser.

Tags are the labels whose score reaches their calibrated threshold, with the set's name as
parent (``suv 0.93`` under ``cars``), so search and recommendations see them like any tag.
The version is the list of ``name@version`` of the active sets: activating or retraining one
makes results outdated for this analyser alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from tagger.analyzers.base import scored_tags
from tagger.config import Settings
from tagger.errors import ConfigError, ModelError
from tagger.imaging import preprocess
from tagger.model.labelset import (
    LabelSet,
    LabelSetSpec,
    find_local,
    read_active,
    unit_rows,
)
from tagger.model.labelset_remote import RemoteLabelSets
from tagger.model.registry import artifact_dir, load_artifact
from tagger.model.runtime import open_session
from tagger.schemas import Findings, Tag
from tagger.similarity import embedding_part
from tagger.sources import make_s3_client


def active_specs(settings: Settings) -> list[LabelSetSpec]:
    """``TAGGER_LABELSETS`` when set, else what ``tagger labels activate`` pinned."""
    if settings.labelsets is not None:
        return [LabelSetSpec.parse(text) for text in settings.labelsets]
    return read_active(settings.labelsets_root)


def resolve_labelsets(settings: Settings, *, pull: bool = True) -> list[LabelSet]:
    """The active sets, each verified; a pinned version missing here is pulled from
    ``TAGGER_LABELSETS_URI`` (when ``pull``) so a fresh worker applies what the fleet applies."""
    found: list[LabelSet] = []
    remote: RemoteLabelSets | None = None
    for spec in active_specs(settings):
        labelset = find_local(settings.labelsets_root, spec)
        if labelset is None and pull and settings.labelsets_uri:
            remote = remote or RemoteLabelSets(make_s3_client(settings), settings.labelsets_uri)
            labelset = remote.pull(spec, settings.labelsets_root)
        if labelset is None:
            where = f" or in {settings.labelsets_uri}" if settings.labelsets_uri else ""
            raise ConfigError(
                f"label set {spec} is not in {settings.labelsets_root}{where}; train it with "
                f"`tagger train`, pull it with `tagger labels pull`, or deactivate it"
            )
        found.append(labelset)
    names = [labelset.name for labelset in found]
    if len(set(names)) != len(names):
        raise ConfigError(f"a label set is active twice: {', '.join(names)}")
    return found


def labels_version(labelsets: Sequence[LabelSet]) -> str:
    return ",".join(sorted(labelset.spec for labelset in labelsets))


@dataclass
class _Applied:
    """One loaded set: its session and how its scores become tags."""

    labelset: LabelSet
    session: ort.InferenceSession

    def scores(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        manifest = self.labelset.manifest
        (scores,) = self.session.run([manifest.output_name], {manifest.input_name: inputs})
        return np.asarray(scores, np.float32)

    def tags(self, scores: npt.NDArray[np.float32]) -> list[Tag]:
        manifest = self.labelset.manifest
        pairs = [
            (label, float(score))
            for label, score in zip(manifest.labels, scores, strict=True)
            if score >= manifest.thresholds[label]
        ]
        pairs.sort(key=lambda pair: -pair[1])
        if not manifest.multi:
            pairs = pairs[:1]
        return scored_tags(pairs, {label: [manifest.name] for label, _ in pairs})


class LabelsAnalyzer:
    """Applies every active label set to a batch of photos."""

    name = "labels"
    reads: tuple[str, ...] = ("classify",)

    def __init__(self, labelsets: Sequence[LabelSet], settings: Settings) -> None:
        backbone = load_artifact(artifact_dir(settings))
        for labelset in labelsets:
            wanted = labelset.manifest.backbone
            if labelset.manifest.kind == "head" and wanted.version != backbone.version:
                raise ModelError(
                    f"label set {labelset.spec} was trained on backbone {wanted.name} "
                    f"{wanted.version}, but {backbone.manifest.name} {backbone.version} is "
                    f"installed; retrain it with `tagger train`"
                )
        self._embedding_size = backbone.manifest.embedding_size
        threads = settings.model.intra_op_threads
        self._applied = [_Applied(s, open_session(s.onnx_path, threads)) for s in labelsets]
        self.version = labels_version(labelsets)
        specs = {s.manifest.preprocess for s in labelsets if s.manifest.preprocess is not None}
        if len(specs) > 1:
            raise ConfigError("active fine-tuned label sets were trained at different sizes")
        self._image_spec = next(iter(specs), None)
        self.min_side = self._image_spec.resize_to if self._image_spec else 0

    @classmethod
    def create(cls, settings: Settings) -> LabelsAnalyzer:
        return cls(resolve_labelsets(settings), settings)

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return labels_version(resolve_labelsets(settings))

    @staticmethod
    def is_active(settings: Settings) -> bool:
        return bool(active_specs(settings))

    def prepare(self, image: Image.Image) -> npt.NDArray[np.float32] | None:
        return None if self._image_spec is None else preprocess(image, self._image_spec)

    def analyse(
        self, prepared: Sequence[Any], context: Sequence[Mapping[str, Findings]]
    ) -> list[Findings]:
        embeddings = self._embeddings(context)
        pixels = np.stack(prepared) if self._image_spec is not None and len(prepared) else None
        found: list[list[Tag]] = [[] for _ in context]
        for applied in self._applied:
            if applied.labelset.manifest.kind == "fine-tuned":
                if pixels is None:
                    continue
                scores = applied.scores(pixels)
                rows: Sequence[int] = range(len(context))
            else:
                present = [(i, vector) for i, vector in enumerate(embeddings) if vector is not None]
                if not present:
                    continue
                rows = [i for i, _ in present]
                scores = applied.scores(unit_rows(np.stack([vector for _, vector in present])))
            for row, photo_scores in zip(rows, scores, strict=True):
                found[row].extend(applied.tags(photo_scores))
        return [Findings(tags=tags) for tags in found]

    def _embeddings(
        self, context: Sequence[Mapping[str, Findings]]
    ) -> list[npt.NDArray[np.float32] | None]:
        """Each photo's embedding as the classifier left it in its signature; ``None`` when
        the classifier did not run on it (then a head has nothing to read)."""
        vectors: list[npt.NDArray[np.float32] | None] = []
        for findings in context:
            classify = findings.get("classify")
            signature = None if classify is None else classify.signature
            vectors.append(
                None if signature is None else embedding_part(signature, self._embedding_size)
            )
        return vectors

    def warm_up(self) -> None:
        blank = unit_rows(np.ones((1, self._embedding_size), np.float32))
        for applied in self._applied:
            if applied.labelset.manifest.kind == "head":
                applied.scores(blank)
