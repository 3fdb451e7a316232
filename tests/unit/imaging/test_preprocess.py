"""Turning a decoded picture into one normalised element of the model's NHWC batch."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tagger.imaging.preprocess import preprocess
from tagger.schemas import PreprocessSpec
from tests.unit.imaging.pictures import BLUE, GREEN, RED, YELLOW, quadrants, sample_photo

SPEC = PreprocessSpec(size=224)


def test_preprocess_gives_an_nhwc_float32_element() -> None:
    tensor = preprocess(Image.fromarray(sample_photo("coffee")), SPEC)
    assert tensor.shape == (224, 224, 3)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous


@pytest.mark.parametrize(("level", "expected"), [(127, 0.0), (255, 1.0), (0, -127 / 128)])
def test_preprocess_normalises_with_mean_and_std(level: int, expected: float) -> None:
    tensor = preprocess(Image.new("RGB", (300, 200), (level,) * 3), SPEC)
    assert np.allclose(tensor, expected, atol=1e-5)


def test_preprocess_normalises_each_channel_with_its_own_mean_and_std() -> None:
    spec = PreprocessSpec(size=8, crop_fraction=1.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    tensor = preprocess(Image.new("RGB", (16, 16), (20, 40, 80)), spec)
    assert np.allclose(tensor[0, 0], [5.0, 5.0, 10.0])
    assert np.allclose(tensor, tensor[0, 0])


def test_preprocess_converts_non_rgb_input() -> None:
    tensor = preprocess(Image.new("L", (50, 50), 255), SPEC)
    assert tensor.shape == (224, 224, 3)
    assert np.allclose(tensor, 1.0)


@pytest.mark.parametrize("landscape", [True, False])
def test_preprocess_crops_the_centre(landscape: bool) -> None:
    """800x400 → shorter side 256 (512x256) → centre 224: source columns 225..575 and rows
    25..375. Paint marker bands just inside that window and red outside it: the tensor must
    start and end with the markers and contain no red."""
    pixels = np.zeros((400, 800, 3), np.uint8)
    pixels[:] = RED
    pixels[25:375, 225:575] = GREEN
    pixels[25:375, 225:245] = BLUE  # left edge of the crop
    pixels[25:375, 555:575] = YELLOW  # right edge of the crop
    pixels[25:45, 245:555] = (255, 0, 255)  # top edge of the crop
    image = Image.fromarray(pixels)
    if not landscape:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    tensor = preprocess(image, SPEC)
    rgb = tensor * 128.0 + 127.0
    if not landscape:
        rgb = np.transpose(rgb, (1, 0, 2))

    def close(pixel: npt.NDArray[np.float32], colour: tuple[int, int, int]) -> bool:
        return bool(np.abs(pixel - np.array(colour)).max() < 40)

    assert close(rgb[112, 3], BLUE)
    assert close(rgb[112, 220], YELLOW)
    assert close(rgb[3, 112], (255, 0, 255))
    assert close(rgb[112, 112], GREEN)
    # No red anywhere: the crop does not reach outside the window (a pixel of bleed at most).
    inner = rgb[1:-1, 1:-1]
    redness = (inner[..., 0] > 200) & (inner[..., 1] < 60) & (inner[..., 2] < 60)
    assert not redness.any()


def test_preprocess_matches_resize_then_crop() -> None:
    photo = Image.fromarray(sample_photo("chelsea"))  # 451x300
    resized = photo.resize((round(451 * 256 / 300), 256), Image.Resampling.BICUBIC)
    left = (resized.width - 224) // 2
    top = (resized.height - 224) // 2
    reference = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32)
    tensor = preprocess(photo, SPEC) * 128.0 + 127.0
    assert np.abs(tensor - reference).mean() < 1.5


def test_preprocess_upscales_small_photos() -> None:
    tensor = preprocess(Image.fromarray(quadrants(32, 24)), SPEC)
    assert tensor.shape == (224, 224, 3)
    # After the 16-pixel-side centre crop, each quadrant still fills its corner.
    rgb = tensor * 128.0 + 127.0
    assert np.abs(rgb[20, 20] - RED).max() < 10
    assert np.abs(rgb[200, 200] - YELLOW).max() < 10
