"""Labelled photo folders generated from the photos scikit-image ships, for ``tagger train``.

The task is the one the custom-labels issue names: "our brand's logo on a cup". Photos are
random crops, scales, flips and exposures of scikit-image's photos; half of them carry a
made-up brand mark (a red disc with a white ring and a bar) pasted at a random place and
size. Nothing is downloaded, and everything is reproducible from the seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

BACKGROUNDS = (
    "coffee",
    "chelsea",
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
)
LABELS = ("branded", "plain")


def _backgrounds() -> list[Image.Image]:
    from skimage import data

    return [
        Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB") for name in BACKGROUNDS
    ]


def _mark(size: int, rng: np.random.Generator) -> Image.Image:
    """The brand mark, RGBA, slightly varied in hue as printing and light vary it."""
    mark = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    red = (int(rng.integers(200, 256)), int(rng.integers(0, 40)), int(rng.integers(20, 60)), 255)
    draw.ellipse((0, 0, size - 1, size - 1), fill=red)
    ring = size // 6
    draw.ellipse(
        (ring, ring, size - 1 - ring, size - 1 - ring), outline="white", width=max(2, size // 14)
    )
    bar = size // 10
    draw.rectangle((size // 2 - bar, size // 4, size // 2 + bar, 3 * size // 4), fill="white")
    return mark.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BICUBIC)


def _photo(background: Image.Image, branded: bool, rng: np.random.Generator) -> bytes:
    width, height = background.size
    side = int(min(width, height) * rng.uniform(0.55, 1.0))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    photo = background.crop((left, top, left + side, top + side)).resize((320, 320))
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    photo = ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.7, 1.3)))
    if branded:
        size = int(320 * rng.uniform(0.25, 0.45))
        mark = _mark(size, rng)
        photo.paste(
            mark, (int(rng.integers(0, 320 - size)), int(rng.integers(0, 320 - size))), mark
        )
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=int(rng.integers(80, 95)))
    return out.getvalue()


def write_logo_photos(dest: Path, per_label: int, seed: int = 0) -> dict[str, list[Path]]:
    """``dest/branded/*.jpg`` and ``dest/plain/*.jpg``, ``per_label`` each."""
    rng = np.random.default_rng(seed)
    backgrounds = _backgrounds()
    written: dict[str, list[Path]] = {label: [] for label in LABELS}
    for label in LABELS:
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            background = backgrounds[index % len(backgrounds)]
            path = folder / f"{label}-{seed}-{index:04d}.jpg"
            path.write_bytes(_photo(background, label == "branded", rng))
            written[label].append(path)
    return written
