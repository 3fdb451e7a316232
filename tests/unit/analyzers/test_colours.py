"""Unit tests for the ``colours`` analyser: names of uniform patches, subject boxes, tags."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tagger.analyzers.colours import (
    BASIC_COLOURS,
    VERSION,
    ColourAnalyzer,
    Colours,
    ColourShare,
    srgb_to_lab,
)

# Typical sRGB values of the 11 terms (web colours), one per name.
PATCHES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (139, 69, 19),
}

# Other shades with an undisputed name: the analyser must not only know its focal colours.
VARIANTS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 24),
    "white": (245, 245, 240),
    "grey": (169, 169, 169),
    "red": (178, 34, 34),
    "orange": (255, 117, 24),
    "yellow": (255, 215, 0),
    "green": (50, 205, 50),
    "blue": (65, 105, 225),
    "purple": (102, 51, 153),
    "pink": (255, 105, 180),
    "brown": (101, 67, 33),
}


@pytest.fixture(scope="module")
def analyzer() -> ColourAnalyzer:
    return ColourAnalyzer()


def test_constants() -> None:
    assert len(BASIC_COLOURS) == 11
    assert set(BASIC_COLOURS) == set(PATCHES)
    assert isinstance(VERSION, str) and VERSION


@pytest.mark.parametrize("patches", [PATCHES, VARIANTS], ids=["focal", "variants"])
@pytest.mark.parametrize("name", BASIC_COLOURS)
def test_uniform_patch_gets_its_name(
    analyzer: ColourAnalyzer, patches: dict[str, tuple[int, int, int]], name: str
) -> None:
    result = analyzer.analyse(Image.new("RGB", (300, 200), patches[name]))
    assert result.photo[0].name == name
    assert result.subject[0].name == name
    assert result.photo[0].fraction == pytest.approx(1.0)
    assert result.subject[0].fraction == pytest.approx(1.0)


def red_square_on_white() -> Image.Image:
    image = Image.new("RGB", (300, 200), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((30, 40, 89, 99), fill=(200, 20, 30))
    return image


def test_subject_box_selects_the_object(analyzer: ColourAnalyzer) -> None:
    box = (30 / 300, 40 / 200, 90 / 300, 100 / 200)
    result = analyzer.analyse(red_square_on_white(), box)
    assert result.photo[0].name == "white"
    assert result.subject[0].name == "red"
    assert result.subject[0].fraction > 0.8
    # 60x60 of 300x200 is 6 % of the photo.
    photo = {share.name: share.fraction for share in result.photo}
    assert photo["red"] == pytest.approx(0.06, abs=0.02)


def test_without_box_the_centre_counts_most(analyzer: ColourAnalyzer) -> None:
    image = Image.new("RGB", (300, 300), (0, 0, 255))
    ImageDraw.Draw(image).ellipse((75, 75, 224, 224), fill=(255, 215, 0))
    result = analyzer.analyse(image)
    assert result.photo[0].name == "blue"
    assert result.subject[0].name == "yellow"


def test_tiny_or_empty_box(analyzer: ColourAnalyzer) -> None:
    image = red_square_on_white()
    tiny = analyzer.analyse(image, (0.2, 0.3, 0.201, 0.301))
    assert tiny.subject[0].name == "red"
    empty = analyzer.analyse(image, (0.5, 0.5, 0.5, 0.5))
    assert empty.subject == analyzer.analyse(image).subject


def test_shares_sorted_summing_to_one_and_above_one_percent(analyzer: ColourAnalyzer) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = analyzer.analyse(Image.fromarray(pixels), (0.1, 0.1, 0.6, 0.9))
    for shares in (result.photo, result.subject):
        fractions = [share.fraction for share in shares]
        assert fractions == sorted(fractions, reverse=True)
        assert all(f >= 0.01 for f in fractions)
        assert 0.95 <= sum(fractions) <= 1.0 + 1e-6
        assert {share.name for share in shares} <= set(BASIC_COLOURS)


def test_other_modes_and_small_images(analyzer: ColourAnalyzer) -> None:
    grey = analyzer.analyse(Image.new("L", (500, 400), 128))
    assert grey.photo[0].name == "grey"
    tiny = analyzer.analyse(Image.new("RGBA", (3, 2), (255, 0, 0, 255)))
    assert tiny.subject[0].name == "red"


def test_thumbnail_size(analyzer: ColourAnalyzer) -> None:
    assert analyzer.thumbnail(Image.new("RGB", (640, 480))).shape == (48, 64, 3)
    assert analyzer.thumbnail(Image.new("RGB", (30, 20))).shape == (20, 30, 3)


def test_colour_tags_threshold() -> None:
    colours = Colours(
        photo=[ColourShare(name="white", fraction=0.9)],
        subject=[
            ColourShare(name="blue", fraction=0.55),
            ColourShare(name="white", fraction=0.3),
            ColourShare(name="grey", fraction=0.15),
        ],
    )
    assert ColourAnalyzer(tag_threshold=0.3).colour_tags(colours) == [
        ("blue", 0.55),
        ("white", 0.3),
    ]
    assert ColourAnalyzer(tag_threshold=0.5).colour_tags(colours) == [("blue", 0.55)]


def test_colour_tags_from_a_photo(analyzer: ColourAnalyzer) -> None:
    box = (30 / 300, 40 / 200, 90 / 300, 100 / 200)
    tags = analyzer.colour_tags(analyzer.analyse(red_square_on_white(), box))
    assert [name for name, _ in tags] == ["red"]


def test_lab_reference_values() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], (100.0, 0.0, 0.0), atol=0.05)
    np.testing.assert_allclose(lab[1], (0.0, 0.0, 0.0), atol=0.05)
    np.testing.assert_allclose(lab[2], (53.24, 80.09, 67.20), atol=0.1)


@pytest.mark.parametrize("kwargs", [{"thumbnail_side": 0}, {"tag_threshold": 0.0}])
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ColourAnalyzer(**kwargs)  # type: ignore[arg-type]
