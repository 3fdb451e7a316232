"""Phone-size test photos made from any folder of photos: 12-megapixel JPEGs and HEICs.

Real uploads are phone photos, not the 500x375 ImageNet JPEGs the benchmark's folder holds.
A phone JPEG is upscaled to 4032x3024 (3024x4032 for a portrait), given sensor-like noise
(Gaussian, sigma 4 levels: without it a smooth upscale compresses to a third of a real phone
photo's bytes and decodes faster than one) and saved at quality 92; every fourth is stored
sideways with EXIF orientation 6, as phones store a photo taken upright. The HEIC of the same
picture is what an iPhone writes: HEVC in a grid of 512x512 tiles with a 320x240 thumbnail,
at a quality that gives iPhone-like sizes (HEVC's decode cost grows with the bitrate: 0.5 s at
0.8 MB, 0.8 s at 2.4 MB, 1 s at 4.5 MB for the same 12 MP picture here). It is stored upright
(its rotation is a container property libheif applies, not a different decode).

Encoding a 12 MP HEIC costs seconds, so the files are made once per source folder and kept in
a cache folder, keyed by the sources' names and sizes and these parameters.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

from tagger.localfiles import is_image_name

PHONE_SIZE = (4032, 3024)
JPEG_QUALITY = 92
NOISE_SIGMA = 4.0
HEIC_QUALITY = 60  # 2.4 MB for 12 MP with this noise, as iPhone HEICs (1.5-3 MB)
HEIC_TILE = 512
HEIC_THUMBNAIL = 320  # box of the thumbnail an iPhone embeds (320x240)
SIDEWAYS_EVERY = 4
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PhoneSet:
    """The generated photos: one JPEG and one HEIC per source, in the sources' order."""

    folder: Path
    sources: list[Path]
    jpegs: list[Path]
    heics: list[Path]


def phone_picture(source: Path, index: int, size: tuple[int, int] = PHONE_SIZE) -> Image.Image:
    """The upright phone-size picture of ``source``, with seeded sensor-like noise."""
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    long_side, short_side = max(size), min(size)
    target = (long_side, short_side) if image.width >= image.height else (short_side, long_side)
    image = image.resize(target, Image.Resampling.BICUBIC)
    rng = np.random.default_rng(index)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, NOISE_SIGMA, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def phone_jpeg(picture: Image.Image, index: int) -> bytes:
    """The JPEG a phone would write; every ``SIDEWAYS_EVERY``-th stored sideways with EXIF
    orientation 6 (rotate 90° clockwise to view), so decoders must turn it back."""
    out = io.BytesIO()
    if index % SIDEWAYS_EVERY == SIDEWAYS_EVERY - 1:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        stored = picture.transpose(Image.Transpose.ROTATE_90)
        stored.save(out, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    else:
        picture.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def phone_heic(picture: Image.Image) -> bytes:
    """The HEIC an iPhone would write: 512x512 HEVC tiles and a 320x240 thumbnail."""
    out = io.BytesIO()
    heif = pillow_heif.from_pillow(picture)
    heif.save(
        out,
        format="HEIF",
        quality=HEIC_QUALITY,
        tile_size=HEIC_TILE,
        thumbnails=[HEIC_THUMBNAIL],
        enc_params={"preset": "ultrafast"},
    )
    return out.getvalue()


def _names(source: Path, folder: Path) -> tuple[Path, Path]:
    """A source's phone files; its size is in the name, so a changed source is made again."""
    stem = f"{source.stem}.{source.stat().st_size}"
    return folder / f"{stem}.jpg", folder / f"{stem}.heic"


def _make_one(job: tuple[Path, int, Path, tuple[int, int]]) -> None:
    source, index, folder, size = job
    picture = phone_picture(source, index, size)
    jpeg, heic = _names(source, folder)
    if not jpeg.exists():
        _write(jpeg, phone_jpeg(picture, index))
    if not heic.exists():
        _write(heic, phone_heic(picture))


def _write(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def make_phone_set(
    sources: Path,
    cache: Path,
    count: int,
    *,
    size: tuple[int, int] = PHONE_SIZE,
    workers: int = 2,
    say: Callable[[str], None] = print,
) -> PhoneSet:
    """The first ``count`` photos of ``sources`` as phone JPEGs and HEICs, made once into
    ``cache/<key>/`` (the key covers the source folder and every parameter above)."""
    files = sorted(p for p in sources.iterdir() if p.is_file() and is_image_name(p.name))
    files = files[:count]
    if not files:
        raise ValueError(f"no photos in {sources}")
    key = hashlib.sha256(
        repr(
            (
                str(sources.resolve()),
                size,
                JPEG_QUALITY,
                NOISE_SIGMA,
                HEIC_QUALITY,
                HEIC_TILE,
                HEIC_THUMBNAIL,
                SIDEWAYS_EVERY,
                pillow_heif.__version__,
            )
        ).encode()
    ).hexdigest()[:16]
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)
    # A photo's index (its noise seed, whether it is stored sideways) is its place in the
    # sorted folder, so asking for more photos later reuses the ones already made.
    jobs = [(path, index, folder, size) for index, path in enumerate(files)]
    missing = [job for job in jobs if not all(p.exists() for p in _names(job[0], folder))]
    if missing:
        say(
            f"making {len(missing)} phone photos ({size[0]}x{size[1]} JPEG + HEIC) in {folder} "
            "(once; HEIC encoding takes a few seconds each) …"
        )
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(_make_one, missing))
    made = [_names(path, folder) for path in files]
    return PhoneSet(
        folder=folder,
        sources=files,
        jpegs=[jpeg for jpeg, _ in made],
        heics=[heic for _, heic in made],
    )
