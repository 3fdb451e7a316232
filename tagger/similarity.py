"""The vector a photo is compared by: "more like this" must agree with people on the *thing*
(another dog) and on the *kind* (another animal), which no single signal of the classifier does.

Measured on the ImageNet dev photos, precision@10 of neighbours sharing the query's friendly tag
/ its top-level group: the CNN's pooled embedding alone 0.33 / 0.38 (it matches look: pose,
colour, background), the summed tag probabilities 0.60 / 0.50 (the thing, but a cat is no
nearer a dog than a car), the probabilities summed into the tags' parent groups add the kind.
A photo's **signature** concatenates the three, each L2-normalised and scaled by the square
root of its weight, so that the dot product of two signatures *is* the weighted sum of the three
cosines: one vector per photo, searchable by any inner-product vector index, no re-ranking.
``tagger eval-similar DIR`` prints every signal and the blend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from tagger.vocabulary import Vocabulary

FloatArray = npt.NDArray[np.float32]


class SignatureWeights(BaseModel):
    """How much each signal counts; they sum to 1 so a signature has unit length."""

    model_config = ConfigDict(frozen=True)

    embedding: float = Field(default=0.2, ge=0)
    tags: float = Field(default=0.6, ge=0)
    groups: float = Field(default=0.2, ge=0)


class SignatureSpace:
    """Turns one photo's class probabilities and pooled embedding into its signature."""

    def __init__(self, vocabulary: Vocabulary, weights: SignatureWeights | None = None) -> None:
        self.vocabulary = vocabulary
        self.weights = weights or SignatureWeights()
        total = self.weights.embedding + self.weights.tags + self.weights.groups
        if total <= 0:
            raise ValueError("signature weights must not all be zero")
        self._scale = [
            np.sqrt(weight / total)
            for weight in (self.weights.embedding, self.weights.tags, self.weights.groups)
        ]
        groups: dict[str, int] = {}
        for parents in vocabulary.tag_parents:
            for parent in parents:
                groups.setdefault(parent, len(groups))
        self.group_names = list(groups)
        membership = np.zeros((len(vocabulary.tag_names), len(groups)), np.float64)
        for index, parents in enumerate(vocabulary.tag_parents):
            for parent in parents:
                membership[index, groups[parent]] = 1.0
        self._membership = membership

    def dims(self, embedding_size: int) -> int:
        return embedding_size + len(self.vocabulary.tag_names) + len(self.group_names)

    def signature(self, probabilities: npt.ArrayLike, embedding: npt.ArrayLike) -> FloatArray:
        tags = self.vocabulary.tag_scores(probabilities)
        parts = (np.asarray(embedding, np.float64), tags, tags @ self._membership)
        joined = np.concatenate(
            [_unit(part) * scale for part, scale in zip(parts, self._scale, strict=True)]
        )
        return joined.astype(np.float32)


def _unit(vector: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return np.asarray(vector, np.float64) / norm if norm > 0 else np.asarray(vector, np.float64)


def embedding_part(signature: npt.ArrayLike, embedding_size: int) -> FloatArray:
    """The backbone embedding's part of a signature (its first ``embedding_size`` components,
    scaled): its direction is what a label set's head reads, so a stored photo gets new custom
    tags without being fetched or decoded again. Callers normalise it."""
    return np.asarray(signature, np.float32)[:embedding_size]
