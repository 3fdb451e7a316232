"""Test pictures shared by the imaging tests: scikit-image's photos and a quadrant pattern
whose orientation and colours a test can read back."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from skimage import data as skdata

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
Array = npt.NDArray[np.uint8]


def sample_photo(name: str) -> Array:
    """One of scikit-image's sample photos (untyped upstream, hence the wrapper)."""
    pixels: Array = getattr(skdata, name)()
    return pixels


def quadrants(width: int = 64, height: int = 48) -> Array:
    """Upright test photo: red | green over blue | yellow."""
    pixels = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    pixels[:h2, :w2] = RED
    pixels[:h2, w2:] = GREEN
    pixels[h2:, :w2] = BLUE
    pixels[h2:, w2:] = YELLOW
    return pixels
