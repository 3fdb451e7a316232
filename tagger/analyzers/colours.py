"""The ``colours`` analyser: the 11 basic colour terms with their shares of the photo and subject.

People search photos by colour ("red car", "blue dress"), and the classifier and detector do not
say it. Berlin & Kay's 11 basic colour terms (black, white, grey, red, orange, yellow, green,
blue, purple, pink, brown) are the names shared by most languages and the ones people use, so
those are the vocabulary; finer names ("teal", "maroon") disagree between people.

The photo is shrunk to a small thumbnail (64 px on the long side: colour shares do not need
detail, and it keeps the cost at a few milliseconds), converted sRGB -> linear -> XYZ (D65) ->
CIELAB, where Euclidean distance roughly follows perceived difference, and every pixel is named
after its nearest prototype colour (looked up in a 5-bit-per-channel RGB table built once, so a
photo costs about half a millisecond). Each name has several prototypes because one name covers
very different points in Lab: dark and light blue, brown is dark orange, pink is light
desaturated red, grey/black/white differ only in lightness. Shares are weighted histograms of
the names: uniform weights for the whole photo, and for the subject either the detector's box
(the largest confident object) or, without one, a centre-weighted Gaussian, since photographers
put the subject near the middle.

A colour becomes a tag when its subject share reaches ``tag_threshold``; the photo share is not
used for tags because a blue sky or a white wall would otherwise tag most photos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from tagger.analyzers.base import scored_tags
from tagger.config import ColourSettings, Settings
from tagger.schemas import Colours, ColourShare, Findings

# Bump when prototypes, weighting or thumbnail size change: stored results are then stale.
VERSION = "colours-1"

BASIC_COLOURS: tuple[str, ...] = (
    "black",
    "white",
    "grey",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
)

# Shares below this are noise (edge pixels, compression) and are left out of the result.
MIN_SHARE = 0.01
# The defaults live in Settings (ColourSettings).
DEFAULT_THUMBNAIL_SIDE = ColourSettings().thumbnail_side
DEFAULT_TAG_THRESHOLD = ColourSettings().tag_threshold
# Standard deviation of the centre-weighted region, as a fraction of each side.
CENTRE_SIGMA = 0.18
# Lightness differences weigh less than hue/chroma ones: shading moves L* a lot without
# changing the name a person gives (a blue car in shadow is still blue).
LIGHTNESS_WEIGHT = 0.6
# Bits per sRGB channel of the naming lookup table (32768 cells at 5).
LUT_BITS = 5

# Prototype sRGB colours per name: focal colours and their dark/light/desaturated variants,
# chosen so that the nearest prototype in Lab draws the boundaries where people do (orange vs
# brown by lightness, red vs pink by lightness and chroma, chromatic vs grey by chroma).
PROTOTYPES: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = (
    ("black", ((0, 0, 0), (28, 28, 30), (38, 34, 30))),
    ("white", ((255, 255, 255), (232, 232, 228), (245, 240, 230))),
    ("grey", ((128, 128, 128), (88, 88, 90), (170, 170, 170), (200, 200, 198), (60, 60, 62))),
    ("red", ((255, 0, 0), (200, 20, 30), (150, 15, 20), (220, 50, 50), (110, 10, 15))),
    ("orange", ((255, 140, 0), (255, 165, 0), (235, 110, 30), (245, 150, 70))),
    ("yellow", ((255, 255, 0), (250, 225, 40), (240, 210, 80), (255, 250, 150), (215, 195, 30))),
    (
        "green",
        (
            (0, 128, 0),
            (0, 255, 0),
            (60, 150, 60),
            (30, 80, 30),
            (140, 200, 90),
            (100, 120, 50),
            (0, 150, 110),
        ),
    ),
    (
        "blue",
        (
            (0, 0, 255),
            (30, 80, 200),
            (20, 40, 110),
            (100, 150, 230),
            (135, 200, 235),
            (70, 110, 160),
            (0, 160, 200),
            (5, 10, 120),
        ),
    ),
    ("purple", ((128, 0, 128), (110, 50, 170), (70, 25, 90), (160, 100, 200), (150, 40, 120))),
    ("pink", ((255, 192, 203), (255, 105, 180), (230, 140, 160), (240, 170, 190), (220, 80, 140))),
    (
        "brown",
        (
            (139, 69, 19),
            (110, 70, 40),
            (160, 100, 55),
            (80, 50, 30),
            (185, 140, 100),
            (130, 100, 70),
        ),
    ),
)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.intp]]

# sRGB -> XYZ (D65), IEC 61966-2-1, and the D65 white point used to normalise XYZ for Lab.
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)


def _srgb_linear_table() -> FloatArray:
    """Linear-light value of each 8-bit sRGB code: a lookup is cheaper than the power law."""
    c = np.arange(256, dtype=np.float64) / 255.0
    table: FloatArray = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return table


def srgb_to_lab(
    rgb: np.ndarray[Any, np.dtype[np.uint8]], table: FloatArray | None = None
) -> FloatArray:
    """CIELAB (D65) of 8-bit sRGB values, shape (..., 3) -> (..., 3)."""
    linear = (table if table is not None else _srgb_linear_table())[rgb]
    xyz = linear @ (np.asarray(_RGB_TO_XYZ).T / np.asarray(_D65_WHITE))
    eps = 216.0 / 24389.0
    kappa = 24389.0 / 27.0
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16.0) / 116.0)
    lab: FloatArray = np.stack(
        (
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ),
        axis=-1,
    )
    return lab


def _box_weights(side: int, low: float, high: float) -> FloatArray:
    """How much of each of ``side`` pixels lies in [low, high] (0..1 of the side).

    Fractional coverage rather than pixel-centre tests, so a box thinner than a thumbnail pixel
    still selects the pixel it falls in.
    """
    edges = np.arange(side + 1, dtype=np.float64) / side
    overlap = np.minimum(edges[1:], high) - np.maximum(edges[:-1], low)
    weights: FloatArray = np.clip(overlap * side, 0.0, 1.0)
    return weights


def _gaussian_weights(side: int) -> FloatArray:
    centres = (np.arange(side, dtype=np.float64) + 0.5) / side - 0.5
    weights: FloatArray = np.exp(-0.5 * (centres / CENTRE_SIGMA) ** 2)
    return weights


def _shares(counts: FloatArray) -> list[ColourShare]:
    total = float(counts.sum())
    if total <= 0.0:
        return []
    fractions = counts / total
    order = np.argsort(-fractions, kind="stable")
    return [
        ColourShare(name=BASIC_COLOURS[i], fraction=round(float(fractions[i]), 4))
        for i in order
        if fractions[i] >= MIN_SHARE
    ]


def _name_table(linear: FloatArray) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Name index of every RGB cell (``LUT_BITS`` per channel), nearest prototype in Lab.

    Cells are named at their centre; a cell is 8 sRGB codes wide at 5 bits, well inside the
    distance at which people change a colour's name.
    """
    rgb = [colour for _, colours in PROTOTYPES for colour in colours]
    prototype_names = np.array(
        [BASIC_COLOURS.index(name) for name, colours in PROTOTYPES for _ in colours], dtype=np.uint8
    )
    scale = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0])
    prototypes = srgb_to_lab(np.array(rgb, dtype=np.uint8), linear) * scale
    step = 1 << (8 - LUT_BITS)
    levels = np.arange(1 << LUT_BITS) * step + step // 2
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    cells = srgb_to_lab(grid.astype(np.uint8), linear) * scale
    # |p - q|^2 without the |p|^2 term, which does not change the argmin.
    distances = (prototypes**2).sum(axis=1) - 2.0 * (cells @ prototypes.T)
    table: np.ndarray[Any, np.dtype[np.uint8]] = prototype_names[np.argmin(distances, axis=1)]
    table.flags.writeable = False
    return table


class ColourAnalyzer:
    """Names the colours of photos; holds only read-only tables, so one instance can be shared."""

    def __init__(
        self,
        thumbnail_side: int = DEFAULT_THUMBNAIL_SIDE,
        tag_threshold: float = DEFAULT_TAG_THRESHOLD,
    ) -> None:
        if thumbnail_side < 1:
            raise ValueError(f"thumbnail_side must be >= 1, got {thumbnail_side}")
        if not 0.0 < tag_threshold <= 1.0:
            raise ValueError(f"tag_threshold must be in (0, 1], got {tag_threshold}")
        self.thumbnail_side = thumbnail_side
        self.tag_threshold = tag_threshold
        self._linear = _srgb_linear_table()
        self._lut = _name_table(self._linear)

    def thumbnail(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The photo as (h, w, 3) uint8 sRGB, ``thumbnail_side`` px on its long side.

        ``reducing_gap`` lets Pillow shrink by an integer factor with ``reduce`` first, which is
        most of the saving on large photos; box filtering then averages the remaining pixels,
        which is what a colour share wants (no ringing, no invented colours).
        """
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        width, height = rgb.size
        scale = self.thumbnail_side / max(width, height)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            rgb = rgb.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
        return np.asarray(rgb, dtype=np.uint8)

    def name_pixels(self, rgb: np.ndarray[Any, np.dtype[np.uint8]]) -> IntArray:
        """Index into ``BASIC_COLOURS`` of each pixel of an (..., 3) uint8 sRGB array.

        A lookup in the table built at start-up: the nearest-prototype search is done once per
        RGB cell instead of once per pixel, which keeps the per-photo cost to integer shifts.
        """
        codes = rgb.astype(np.intp) >> (8 - LUT_BITS)
        index = (codes[..., 0] << (2 * LUT_BITS)) | (codes[..., 1] << LUT_BITS) | codes[..., 2]
        names: IntArray = self._lut[index].astype(np.intp)
        return names

    def analyse(
        self,
        image: Image.Image,
        subject_box: tuple[float, float, float, float] | None = None,
    ) -> Colours:
        """Colour shares of ``image`` and of its subject.

        ``subject_box`` is (x0, y0, x1, y1) in 0..1 of the image, e.g. the largest confident
        detector box; without it, or when it is empty, the subject is a centre-weighted region.
        """
        return self.analyse_pixels(self.thumbnail(image), subject_box)

    def analyse_pixels(
        self,
        pixels: np.ndarray[Any, np.dtype[np.uint8]],
        subject_box: tuple[float, float, float, float] | None = None,
    ) -> Colours:
        """:meth:`analyse` for a thumbnail already made by :meth:`thumbnail`."""
        height, width = pixels.shape[:2]
        names = self.name_pixels(pixels).ravel()
        photo: FloatArray = np.bincount(names, minlength=len(BASIC_COLOURS)).astype(np.float64)

        weights: FloatArray | None = None
        if subject_box is not None:
            x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in subject_box)
            weights = np.outer(_box_weights(height, y0, y1), _box_weights(width, x0, x1))
            if float(weights.sum()) <= 0.0:
                weights = None
        if weights is None:
            weights = np.outer(_gaussian_weights(height), _gaussian_weights(width))
        subject: FloatArray = np.bincount(
            names, weights=weights.ravel(), minlength=len(BASIC_COLOURS)
        ).astype(np.float64)
        return Colours(photo=_shares(photo), subject=_shares(subject))

    def colour_tags(self, colours: Colours) -> list[tuple[str, float]]:
        """(name, subject share) of each colour whose subject share reaches ``tag_threshold``."""
        return [
            (share.name, share.fraction)
            for share in colours.subject
            if share.fraction >= self.tag_threshold
        ]


class ColoursAnalyzer:
    """The ``colours`` analyser: colour shares of photo and subject, and colour tags.

    The subject is the largest confident object box when the ``objects`` analyser is enabled
    and found one, else the centre-weighted region.
    """

    name = "colours"
    version = VERSION
    reads: tuple[str, ...] = ("objects",)

    def __init__(self, colours: ColourAnalyzer) -> None:
        self.colours = colours

    @classmethod
    def create(cls, settings: Settings) -> ColoursAnalyzer:
        return cls(ColourAnalyzer(settings.colours.thumbnail_side, settings.colours.tag_threshold))

    @staticmethod
    def installed_version(settings: Settings) -> str:
        return VERSION

    @property
    def min_side(self) -> int:
        return self.colours.thumbnail_side

    def prepare(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
        return self.colours.thumbnail(image)

    def analyse(
        self,
        prepared: Sequence[np.ndarray[Any, np.dtype[np.uint8]]],
        context: Sequence[Mapping[str, Findings]],
    ) -> list[Findings]:
        results: list[Findings] = []
        for pixels, found in zip(prepared, context, strict=True):
            colours = self.colours.analyse_pixels(pixels, subject_box(found.get("objects")))
            tags = scored_tags(self.colours.colour_tags(colours), COLOUR_PARENTS)
            results.append(Findings(colours=colours, tags=tags))
        return results

    def warm_up(self) -> None:
        """Nothing to warm: the colour table is built in the constructor."""


def subject_box(objects: Findings | None) -> tuple[float, float, float, float] | None:
    """The largest box among the detections (they are all above the detector's threshold)."""
    if objects is None or not objects.objects:
        return None

    def area(box: tuple[float, float, float, float]) -> float:
        return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])

    return max((obj.box for obj in objects.objects), key=area)


COLOUR_PARENTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: ("colour",) for name in BASIC_COLOURS}
)
