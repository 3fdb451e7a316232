"""Write the photos scikit-image ships as JPEG files, for the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "camera",
    "hubble_deep_field",
)


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        pixels = np.asarray(getattr(data, name)())
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}.jpg", quality=92)
    print(f"{len(PHOTOS)} sample photos in {folder}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
