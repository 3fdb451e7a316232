"""ImageNet-1k class probabilities → friendly tags with parents (tabby → ``cat`` → ``animal``).

The model spreads a cat photo over *tabby*, *tiger cat* and *Egyptian cat*; none of them may
pass a threshold alone, yet the photo is plainly a cat. So a tag's score is the **sum** of the
probabilities of every class mapped to it, computed with one ``np.bincount`` per photo.

The class → tag mapping is data, not code: ``tagger/data/vocabulary.json``, generated from
WordNet and hand-written rules by ``tagger_dev/make_vocabulary.py``. Nothing here needs
WordNet at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tagger.schemas import ClassScore, Tag

DATA_PACKAGE = "tagger"
DATA_FILE = ("data", "vocabulary.json")


class VocabularyEntry(BaseModel):
    """One model output: its ImageNet class and the friendly tag it counts towards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    wnid: str = Field(pattern=r"^n\d{8}$")
    label: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    parents: tuple[str, ...] = ()


class VocabularyFile(BaseModel):
    """The packaged data file, validated so a hand-edited or truncated file fails at load
    rather than mislabelling photos."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    classes: tuple[VocabularyEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> VocabularyFile:
        parents: dict[str, tuple[str, ...]] = {}
        for position, entry in enumerate(self.classes):
            if entry.index != position:
                raise ValueError(f"class {entry.wnid} has index {entry.index}, expected {position}")
            known = parents.setdefault(entry.tag, entry.parents)
            if known != entry.parents:
                raise ValueError(
                    f"tag {entry.tag!r} has parents {list(known)} and {list(entry.parents)}"
                )
            if entry.tag in entry.parents:
                raise ValueError(f"tag {entry.tag!r} lists itself as a parent")
        return self


class Vocabulary:
    """Maps a probability vector in model output order to top classes and friendly tags."""

    def __init__(self, entries: Sequence[VocabularyEntry]) -> None:
        checked = VocabularyFile(source="in memory", classes=tuple(entries))
        self._entries = checked.classes
        self._wnids = [entry.wnid for entry in self._entries]
        self._labels = [entry.label for entry in self._entries]
        tag_ids: dict[str, int] = {}
        self._tag_parents: list[tuple[str, ...]] = []
        for entry in self._entries:
            if entry.tag not in tag_ids:
                tag_ids[entry.tag] = len(tag_ids)
                self._tag_parents.append(entry.parents)
        self._tag_names = list(tag_ids)
        # Class index → tag index, so per-photo tag scores are one bincount.
        self._class_tag = np.fromiter(
            (tag_ids[entry.tag] for entry in self._entries),
            dtype=np.intp,
            count=len(self._entries),
        )

    @classmethod
    def load(cls) -> Vocabulary:
        """Read the vocabulary shipped inside the package (works from a wheel or a zip)."""
        resource = resources.files(DATA_PACKAGE).joinpath(*DATA_FILE)
        data = VocabularyFile.model_validate_json(resource.read_bytes())
        return cls(data.classes)

    @property
    def wnids(self) -> list[str]:
        """WordNet ids in model output order."""
        return list(self._wnids)

    @property
    def labels(self) -> list[str]:
        """Readable ImageNet labels in model output order (not unique: two *crane*s)."""
        return list(self._labels)

    @property
    def tag_names(self) -> list[str]:
        """Every friendly tag the vocabulary can produce, each once."""
        return list(self._tag_names)

    @property
    def tag_parents(self) -> list[tuple[str, ...]]:
        """The parents of each tag of :attr:`tag_names`, in the same order."""
        return list(self._tag_parents)

    def tag_scores(self, probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Every friendly tag's summed probability, in :attr:`tag_names` order (no threshold)."""
        scores: npt.NDArray[np.float64] = np.bincount(
            self._class_tag, weights=self._checked(probs), minlength=len(self._tag_names)
        ).astype(np.float64)
        return scores

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, index: int) -> VocabularyEntry:
        return self._entries[index]

    def _checked(self, probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        array = np.asarray(probs, dtype=np.float64)
        if array.shape != (len(self),):
            raise ValueError(
                f"expected one probability per class, shape ({len(self)},), got {array.shape}"
            )
        return array

    def classes(self, probs: npt.ArrayLike, top_k: int) -> list[ClassScore]:
        """The ``top_k`` most probable classes, best first; ties keep model order."""
        array = self._checked(probs)
        if top_k <= 0:
            return []
        order = np.argsort(-array, kind="stable")[:top_k]
        return [
            ClassScore(wnid=self._wnids[i], label=self._labels[i], score=float(array[i]))
            for i in order.tolist()
        ]

    def tags(self, probs: npt.ArrayLike, threshold: float) -> list[Tag]:
        """Friendly tags whose summed class probability is at least ``threshold``, best first.

        A tag with no probability at all is never returned, even with ``threshold=0``, so a
        zero threshold means "every tag the model saw" rather than all of them.
        """
        scores = self.tag_scores(probs)
        keep = np.flatnonzero((scores >= threshold) & (scores > 0))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        return [
            Tag(
                name=self._tag_names[i],
                score=float(scores[i]),
                parents=list(self._tag_parents[i]),
            )
            for i in keep.tolist()
        ]

    def postprocess(
        self, probs: npt.ArrayLike, top_k: int, threshold: float
    ) -> tuple[list[ClassScore], list[Tag]]:
        """Both views of one photo's probabilities, as a TagResult stores them."""
        return self.classes(probs, top_k), self.tags(probs, threshold)
