"""The signature "more like this" compares photos by, and its evaluation command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.config import Settings
from tagger.similarity import SignatureSpace, SignatureWeights
from tagger.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def space() -> SignatureSpace:
    return SignatureSpace(Vocabulary.load())


def random_photo(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    probs = rng.dirichlet(np.full(1000, 0.05))
    return probs, rng.normal(size=size)


def test_a_signature_has_unit_length_and_its_dot_product_is_the_weighted_cosines(
    space: SignatureSpace,
) -> None:
    rng = np.random.default_rng(0)
    (p1, e1), (p2, e2) = random_photo(rng, 1280), random_photo(rng, 1280)
    s1, s2 = space.signature(p1, e1), space.signature(p2, e2)
    assert s1.shape == (space.dims(1280),) and s1.dtype == np.float32
    assert np.linalg.norm(s1) == pytest.approx(1.0, abs=1e-5)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    vocabulary = space.vocabulary
    t1, t2 = vocabulary.tag_scores(p1), vocabulary.tag_scores(p2)
    g1, g2 = t1 @ space._membership, t2 @ space._membership
    expected = 0.2 * cos(e1, e2) + 0.6 * cos(t1, t2) + 0.2 * cos(g1, g2)
    assert float(s1 @ s2) == pytest.approx(expected, abs=1e-5)


def test_two_cats_are_nearer_than_a_cat_and_a_car(space: SignatureSpace) -> None:
    """A tabby and a tiger cat share no class, yet they share the tag and the group."""
    vocabulary = space.vocabulary
    index = {vocabulary.entry(i).label: i for i in range(len(vocabulary))}
    embedding = np.ones(1280)

    def photo(label: str) -> np.ndarray:
        probs = np.full(1000, 1e-6)
        probs[index[label]] = 1.0
        return space.signature(probs / probs.sum(), embedding)

    tabby, tiger_cat, sports_car, beagle = (
        photo(name) for name in ("tabby", "tiger cat", "sports car", "beagle")
    )
    assert tabby @ tiger_cat > tabby @ beagle > tabby @ sports_car


def test_all_zero_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="must not all be zero"):
        SignatureSpace(Vocabulary.load(), SignatureWeights(embedding=0, tags=0, groups=0))


def test_eval_similar_ranks_a_flipped_copy_first(
    settings: Settings, sample_photos: dict[str, bytes], tmp_path: Path
) -> None:
    import io

    from tagger.evaluation import evaluate_similar, labelled_photos
    from tagger.pipeline import Pipeline

    folder = tmp_path / "labelled"
    folder.mkdir()
    chelsea = Image.open(io.BytesIO(sample_photos["chelsea"]))
    chelsea.save(folder / "n02123045_tabby.jpg")
    chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "n02123159_tiger_cat.jpg")
    (folder / "n07920052_espresso.jpg").write_bytes(sample_photos["coffee"])
    (folder / "n04008634_projectile.jpg").write_bytes(sample_photos["rocket"])
    classify_only = settings.model_copy(update={"analyzers": ["classify"]})
    with Pipeline.from_settings(classify_only, allow_local_paths=True) as pipeline:
        report = evaluate_similar(pipeline, labelled_photos(folder), k=1)
    assert report.photos == 4 and report.queries_by_tag == 2  # the two cats
    assert report.precision["signature"][0] == 1.0
    assert report.best_possible[0] == 1.0
