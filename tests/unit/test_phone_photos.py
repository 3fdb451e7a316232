"""The phone-size photos `tagger bench --phone` measures are what phones write: a sideways
JPEG every fourth with EXIF orientation 6, and HEICs in 512-px tiles with a 320x240 thumbnail,
all showing the same upright picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

from tagger.config import ImageSettings
from tagger.imaging import decode
from tagger_dev.phone_photos import make_phone_set


def test_phone_set_is_upright_sideways_and_tiled(
    sample_photos: dict[str, bytes], tmp_path: Path
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for name, data in list(sample_photos.items())[:4]:
        (sources / f"{name}.jpg").write_bytes(data)
    made = make_phone_set(sources, tmp_path / "cache", 4, size=(1024, 768), say=lambda _: None)
    assert len(made.jpegs) == len(made.heics) == 4
    for index, (jpeg, heic) in enumerate(zip(made.jpegs, made.heics, strict=True)):
        with Image.open(jpeg) as stored:
            orientation = stored.getexif().get(0x0112)
            stored_size = stored.size
        assert orientation == (6 if index == 3 else None)
        upright = decode(jpeg.read_bytes(), ImageSettings())
        turned = (upright.height, upright.width) if orientation == 6 else upright.image.size
        assert stored_size == turned
        from_heic = decode(heic.read_bytes(), ImageSettings())
        assert (upright.width, upright.height) == (from_heic.width, from_heic.height)
        assert max(upright.width, upright.height) == 1024
        # the same picture: close in colour on a coarse grid
        a = np.asarray(upright.image.resize((16, 12)), np.float32)
        b = np.asarray(from_heic.image.resize((16, 12)), np.float32)
        assert np.abs(a - b).mean() < 12
        info = pillow_heif.open_heif(heic)[0].info
        assert info["thumbnails"] == [320]
        assert info["tiling"]["tile_width"] == 512
    # made once: a second call finds them in the cache and rewrites nothing
    stamps = [p.stat().st_mtime_ns for p in made.jpegs + made.heics]
    again = make_phone_set(sources, tmp_path / "cache", 4, size=(1024, 768), say=lambda _: None)
    assert [p.stat().st_mtime_ns for p in again.jpegs + again.heics] == stamps
