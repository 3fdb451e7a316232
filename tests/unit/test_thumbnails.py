"""Thumbnails: WebP of the right size from the upright decode, and the stores that keep them
(files in the data folder; the S3 one is tested against moto in
tests/integration/test_thumbnails_service.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.config import ImageSettings, S3Settings, Settings, ThumbnailSettings
from tagger.errors import ConfigError
from tagger.imaging import ImageDecoder
from tagger.thumbnails import (
    FileThumbnailStore,
    S3ThumbnailStore,
    ThumbnailStoreError,
    decode_side,
    make_thumbnail,
    thumbnail_store,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def webp(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    return image


def picture(width: int, height: int) -> Image.Image:
    """Red on the left half, blue on the right: a rotation shows."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, **options)
    return out.getvalue()


def near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


# -- make_thumbnail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [((500, 375), (384, 288)), ((300, 1200), (96, 384)), ((4000, 3000), (384, 288))],
)
def test_the_long_side_becomes_the_thumbnail_side(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    thumbnail = webp(make_thumbnail(picture(*size), 384, 75))
    assert thumbnail.size == expected
    assert thumbnail.mode == "RGB"


def test_a_small_photo_is_never_enlarged() -> None:
    assert webp(make_thumbnail(picture(200, 120), 384, 75)).size == (200, 120)


def test_any_mode_becomes_a_webp() -> None:
    grey = picture(500, 375).convert("L")
    assert webp(make_thumbnail(grey, 128, 75)).size == (128, 96)
    with_alpha = picture(500, 375).convert("RGBA")
    with_alpha.putalpha(128)
    assert webp(make_thumbnail(with_alpha, 128, 75)).mode == "RGBA"
    palette = picture(500, 375).convert("P")
    assert webp(make_thumbnail(palette, 128, 75)).mode == "RGB"


def test_an_exif_rotated_photo_gives_a_rotated_thumbnail() -> None:
    """Stored 800x400 with orientation 6 (turn 90 degrees clockwise to view): upright it is
    400x800, its stored left (red) half on top. The thumbnail is made from the decoder's
    upright picture, so it is portrait, red on top, and carries no EXIF to turn it again."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg(picture(800, 400), exif=exif.tobytes())
    decoded = ImageDecoder(ImageSettings()).decode(data, 384)
    thumbnail = webp(make_thumbnail(decoded.image, 384, 75))
    assert thumbnail.size == (192, 384)
    rgb = thumbnail.convert("RGB")
    assert near(rgb.getpixel((96, 40)), RED) and near(rgb.getpixel((96, 344)), BLUE)
    assert not thumbnail.getexif()


@pytest.mark.parametrize(
    "size",
    [(4000, 3000), (3000, 4000), (2400, 2400), (4032, 3024), (6000, 4000), (2401, 2399),
     (3200, 500), (1000, 999), (200, 120)],
)  # fmt: skip
def test_the_decode_asked_for_keeps_enough_for_the_long_side(size: tuple[int, int]) -> None:
    """With the analysers' own side (300) or the thumbnail's :func:`decode_side`, whichever
    is larger, the decoded picture's long side still reaches the thumbnail side."""
    data = jpeg(picture(*size))
    side = max(300, decode_side(data, 384))
    decoded = ImageDecoder(ImageSettings()).decode(data, side)
    assert max(decoded.image.size) >= min(384, max(size))
    assert max(webp(make_thumbnail(decoded.image, 384, 75)).size) == min(384, max(size))


def test_decode_side_asks_only_what_the_long_side_needs() -> None:
    assert decode_side(jpeg(picture(4000, 3000)), 384) == 289  # 384 * 3/4, +1 for rounding
    assert decode_side(jpeg(picture(2000, 3000)), 384) == 257
    assert decode_side(jpeg(picture(2400, 2400)), 384) == 384
    assert decode_side(b"not a photo", 384) == 384  # the decode says what is wrong


def test_quality_trades_bytes() -> None:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), np.uint8))
    assert len(make_thumbnail(photo, 384, 30)) < len(make_thumbnail(photo, 384, 90))


# -- the files store -----------------------------------------------------------------------


def test_files_round_trip_under_a_digest_of_the_identity(tmp_path: Path) -> None:
    store = FileThumbnailStore(tmp_path / "thumbnails")
    identity = "s3://photos/2026/cat.jpg"
    assert store.get(identity) is None
    store.put(identity, b"first")
    store.put(identity, b"second")
    digest = hashlib.sha256(identity.encode()).hexdigest()
    path = tmp_path / "thumbnails" / digest[:2] / f"{digest}.webp"
    assert path.read_bytes() == b"second" == store.get(identity)
    store.put_many({"/photos/a.jpg": b"a", "https://example.com/b.jpg?w=640": b"b"})
    assert store.get("/photos/a.jpg") == b"a"
    assert store.get("https://example.com/b.jpg?w=640") == b"b"
    files = sorted(p.name for p in (tmp_path / "thumbnails").rglob("*") if p.is_file())
    assert len(files) == 3 and all(name.endswith(".webp") for name in files), files


def test_a_failed_file_write_names_its_photos_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "thumbnails").write_text("a file where the folder should be")
    store = FileThumbnailStore(tmp_path / "thumbnails")
    with pytest.raises(ThumbnailStoreError) as raised:
        store.put_many({"a.jpg": b"a", "b.jpg": b"b"})
    assert set(raised.value.failed) == {"a.jpg", "b.jpg"}
    assert list(tmp_path.iterdir()) == [tmp_path / "thumbnails"]


# -- which store ---------------------------------------------------------------------------


def test_the_store_follows_the_settings(tmp_path: Path) -> None:
    files = thumbnail_store(Settings(data_dir=tmp_path))
    assert isinstance(files, FileThumbnailStore) and files.root == tmp_path / "thumbnails"
    beside_sidecars = Settings(data_dir=tmp_path, s3=S3Settings(results_prefix="s3://res/tags/"))
    s3 = thumbnail_store(beside_sidecars)
    assert isinstance(s3, S3ThumbnailStore) and s3.bucket == "res"
    digest = hashlib.sha256(b"s3://p/cat.jpg").hexdigest()
    assert s3.key("s3://p/cat.jpg") == f"tags/thumbnails/{digest}.webp"
    at_root = thumbnail_store(Settings(s3=S3Settings(results_prefix="s3://res")))
    assert isinstance(at_root, S3ThumbnailStore) and at_root.key("x").startswith("thumbnails/")
    off = Settings(data_dir=tmp_path, thumbnails=ThumbnailSettings(enabled=False))
    assert thumbnail_store(off) is None
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        thumbnail_store(Settings(s3=S3Settings(results_prefix="res/tags")))


def test_the_side_is_bounded() -> None:
    with pytest.raises(ValueError, match="side"):
        ThumbnailSettings(side=4096)
    assert Settings().thumbnails == ThumbnailSettings(enabled=True, side=384, quality=75)
