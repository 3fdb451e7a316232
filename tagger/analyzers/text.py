"""The ``text`` analyser (opt-in): words in the photo — signs, menus, shop fronts, captions
burnt into memes — as the ``text`` field and as searchable tags under the parent ``text``.

It runs RapidOCR (PP-OCRv4 text detection and recognition in onnxruntime) on the verified
copies in its artifact. OCR costs 0.6-3.7 s per photo on two cores, twenty to a hundred times
the other analysers together, so it is off unless ``TAGGER_ANALYZERS`` names it; `tagger bench`
prints its cost when it is enabled. The OCR works one photo at a time (each photo's text boxes
are batched inside it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tagger.analyzers.base import scored_tags
from tagger.config import Settings
from tagger.errors import ModelError
from tagger.model.build_text import TextManifest, build_text_artifact, load_text_manifest
from tagger.model.registry import ensure_built
from tagger.schemas import Findings

ARTIFACT_DIR = "text"
# OCR needs letters a few pixels high; 960 px on the short side keeps a sign readable in a
# 12 MP photo without decoding it whole.
MIN_SIDE = 960
MIN_LINE_SCORE = 0.6
WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
MAX_WORD_TAGS = 20


class TextAnalyzer:
    """Lines of text read from the photo; words of three letters or more become tags."""

    name = "text"
    reads: tuple[str, ...] = ()
    min_side = MIN_SIDE

    def __init__(self, path: Path, manifest: TextManifest, intra_op_threads: int = 0) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("the text analyser needs pip install 'tagger[text]'") from exc
        threads = intra_op_threads or -1
        self.manifest = manifest
        self._ocr = RapidOCR(
            det_model_path=str(path / manifest.files["det"]),
            cls_model_path=str(path / manifest.files["cls"]),
            rec_model_path=str(path / manifest.files["rec"]),
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
        )

    @classmethod
    def create(cls, settings: Settings) -> TextAnalyzer:
        path = settings.model_dir / ARTIFACT_DIR
        manifest = ensure_built(
            path, load_text_manifest, build_text_artifact, allowed=settings.model.build_if_missing
        )
        return cls(path, manifest, settings.model.intra_op_threads)

    @staticmethod
    def build(settings: Settings) -> str:
        return build_text_artifact(settings.model_dir / ARTIFACT_DIR).version

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return load_text_manifest(settings.model_dir / ARTIFACT_DIR).version

    @property
    def version(self) -> str:
        return self.manifest.version

    def prepare(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # RapidOCR wants BGR

    def analyse(
        self,
        prepared: Sequence[np.ndarray[Any, np.dtype[np.uint8]]],
        context: Sequence[Mapping[str, Findings]],
    ) -> list[Findings]:
        return [self._read(pixels) for pixels in prepared]

    def _read(self, pixels: np.ndarray[Any, np.dtype[np.uint8]]) -> Findings:
        found, _ = self._ocr(pixels)
        lines = [
            (str(text).strip(), float(score))
            for _box, text, score in found or []
            if float(score) >= MIN_LINE_SCORE and str(text).strip()
        ]
        best: dict[str, float] = {}
        for text, score in lines:
            for word in WORD.findall(text.lower()):
                best[word] = max(best.get(word, 0.0), score)
        words = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:MAX_WORD_TAGS]
        tags = scored_tags(words, {word: ("text",) for word, _ in words})
        return Findings(text=[text for text, _ in lines], tags=tags)

    def warm_up(self) -> None:
        self._ocr(np.full((64, 256, 3), 255, np.uint8))
