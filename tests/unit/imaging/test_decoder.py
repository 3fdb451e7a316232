"""Decoding real-world uploads and turning them into the model's tensor.

Every photo here is made in memory: a four-colour quadrant pattern (distinct under all eight
flips and rotations, so a wrong orientation or a channel swap shows), saved in each format.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pillow_heif
import pytest
from PIL import Image, PngImagePlugin

from tagger.config import ImageSettings
from tagger.errors import (
    CorruptImage,
    EmptyInput,
    ImageTooLarge,
    NotAnImage,
    TaggerError,
    TruncatedImage,
)
from tagger.imaging import (
    DecodedImage,
    ImageDecoder,
    decode,
    load_tensor,
    preprocess,
)
from tagger.schemas import PreprocessSpec
from tests.unit.imaging.pictures import BLUE, GREEN, RED, YELLOW, Array, quadrants, sample_photo

LIMITS = ImageSettings()


def quadrant_colours(image: Image.Image) -> list[tuple[int, ...]]:
    """Mean colour of a patch in the middle of each quadrant: TL, TR, BL, BR."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = pixels.shape[:2]
    out = []
    for fy, fx in ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
        y, x = int(h * fy), int(w * fx)
        patch = pixels[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        out.append(tuple(round(float(v)) for v in patch.reshape(-1, 3).mean(axis=0)))
    return out


def assert_quadrants(image: Image.Image, tolerance: int) -> None:
    assert image.mode == "RGB"
    for got, want in zip(quadrant_colours(image), (RED, GREEN, BLUE, YELLOW), strict=True):
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= tolerance, (got, want)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def heif_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png16_rgb(pixels: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit-per-channel RGB PNG, which Pillow cannot write itself."""
    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------- formats

FORMATS: dict[str, tuple[Callable[[Image.Image], bytes], str, int]] = {
    # name: (encoder, Pillow's format name, colour tolerance)
    "jpeg": (lambda im: encode(im, "JPEG", quality=95), "JPEG", 12),
    "jpeg-progressive": (
        lambda im: encode(im, "JPEG", quality=95, progressive=True),
        "JPEG",
        12,
    ),
    "jpeg-420": (
        lambda im: encode(im, "JPEG", quality=90, subsampling="4:2:0"),
        "JPEG",
        30,
    ),
    "png": (lambda im: encode(im, "PNG"), "PNG", 0),
    "png-palette": (lambda im: encode(im.convert("P"), "PNG"), "PNG", 0),
    "webp-lossy": (lambda im: encode(im, "WEBP", quality=95), "WEBP", 20),
    "webp-lossless": (lambda im: encode(im, "WEBP", lossless=True), "WEBP", 0),
    "gif": (lambda im: encode(im, "GIF"), "GIF", 0),
    "bmp": (lambda im: encode(im, "BMP"), "BMP", 0),
    "tiff": (lambda im: encode(im, "TIFF"), "TIFF", 0),
    "tiff-lzw": (lambda im: encode(im, "TIFF", compression="tiff_lzw"), "TIFF", 0),
    "tiff-jpeg": (lambda im: encode(im, "TIFF", compression="jpeg", quality=95), "TIFF", 12),
    "heic": (lambda im: heif_bytes(im, quality=95), "HEIF", 20),
    "avif": (lambda im: encode(im, "AVIF", quality=95), "AVIF", 20),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_upload_format_decodes_to_upright_rgb_with_its_colours(name: str) -> None:
    encoder, fmt, tolerance = FORMATS[name]
    decoded = decode(encoder(Image.fromarray(quadrants())), LIMITS)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.size == (64, 48)
    assert_quadrants(decoded.image, tolerance)


def test_a_real_photo_survives_a_jpeg_round_trip() -> None:
    photo = sample_photo("chelsea")
    decoded = decode(encode(Image.fromarray(photo), "JPEG", quality=95), LIMITS)
    assert decoded.image.size == (photo.shape[1], photo.shape[0])
    error = np.abs(np.asarray(decoded.image, np.float64) - photo).mean()
    assert error < 3.0


# ------------------------------------------------------------------------------ orientation

# Stored pixels for each EXIF orientation, defined from the EXIF spec ("row 0 is the visual
# …, column 0 is the visual …") with numpy, independently of Pillow's transpose table.
STORED: dict[int, Callable[[Array], Array]] = {
    1: lambda u: u,
    2: lambda u: np.fliplr(u),
    3: lambda u: np.rot90(u, 2),
    4: lambda u: np.flipud(u),
    5: lambda u: np.transpose(u, (1, 0, 2)),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: np.rot90(np.transpose(u, (1, 0, 2)), 2),
    8: lambda u: np.rot90(u, -1),
}


def with_orientation(orientation: int, fmt: str, **options: object) -> bytes:
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](quadrants())))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_for_all_eight_values(orientation: int) -> None:
    decoded = decode(with_orientation(orientation, "JPEG", quality=95), LIMITS)
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.size == (64, 48)
    assert_quadrants(decoded.image, 12)


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_exif_orientation_is_applied_outside_jpeg_too(fmt: str, options: dict[str, object]) -> None:
    decoded = decode(with_orientation(6, fmt, **options), LIMITS)
    assert (decoded.width, decoded.height) == (64, 48)
    assert_quadrants(decoded.image, 0)


def test_heic_rotation_is_applied() -> None:
    # pillow_heif stores an EXIF rotation as the container's own transform.
    stored = Image.fromarray(np.ascontiguousarray(STORED[6](quadrants())))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode(heif_bytes(stored, quality=95, exif=exif.tobytes()), LIMITS)
    assert (decoded.width, decoded.height) == (64, 48)
    assert_quadrants(decoded.image, 20)


def test_heic_thumbnail_stands_in_when_large_enough() -> None:
    # Phones embed a thumbnail in every HEIC; HEVC has no reduced decode, so a thumbnail whose
    # shorter side reaches min_side is decoded instead of the whole photo (an 800x600 here;
    # 12 MP costs a second of libde265 CPU). The full size is still what the photo reports.
    data = heif_bytes(Image.fromarray(quadrants(800, 600)), quality=95, thumbnails=[320])
    small = decode(data, LIMITS, min_side=200)
    assert small.image.size == (320, 240)
    assert (small.width, small.height, small.format) == (800, 600, "HEIF")
    assert_quadrants(small.image, 20)
    # A thumbnail shorter than min_side would lose detail the analysers need: full decode.
    full = decode(data, LIMITS, min_side=300)
    assert min(full.image.size) >= 300 and full.image.size != (320, 240)
    assert (full.width, full.height) == (800, 600)
    assert_quadrants(full.image, 20)


def test_heic_thumbnail_of_a_rotated_photo_is_upright() -> None:
    stored = Image.fromarray(np.ascontiguousarray(STORED[6](quadrants(800, 600))))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = heif_bytes(stored, quality=95, exif=exif.tobytes(), thumbnails=[320])
    decoded = decode(data, LIMITS, min_side=200)
    assert (decoded.width, decoded.height) == (800, 600)
    assert decoded.image.size == (320, 240)
    assert_quadrants(decoded.image, 20)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_does_not_cost_the_photo() -> None:
    data = encode(Image.fromarray(quadrants()), "JPEG", quality=95, exif=b"Exif\x00\x00II*\x00junk")
    assert_quadrants(decode(data, LIMITS).image, 12)


# --------------------------------------------------------------------------- colour spaces


def cmyk_quadrants() -> Image.Image:
    cmyk = np.zeros((48, 64, 4), np.uint8)
    cmyk[:24, :32] = (0, 255, 255, 0)  # red
    cmyk[:24, 32:] = (255, 0, 255, 0)  # green
    cmyk[24:, :32] = (255, 255, 0, 0)  # blue
    cmyk[24:, 32:] = (0, 0, 255, 0)  # yellow
    return Image.fromarray(cmyk, mode="CMYK")


def test_cmyk_jpeg_written_the_adobe_way_gets_its_colours() -> None:
    data = encode(cmyk_quadrants(), "JPEG", quality=95)
    assert b"Adobe" in data  # Photoshop's inverted-CMYK convention
    decoded = decode(data, LIMITS)
    assert_quadrants(decoded.image, 12)


def test_ycck_jpeg_gets_its_colours() -> None:
    """A YCCK JPEG (what Photoshop writes for CMYK) stores the inverted CMY as YCbCr, plus K.

    Pillow cannot write one, so encode the YCbCr of (C, M, Y) as CMYK and flip the Adobe
    transform flag from 0 (CMYK) to 2 (YCCK).
    """
    cmyk = np.asarray(cmyk_quadrants())
    ycc = np.asarray(Image.fromarray(cmyk[..., :3].copy(), mode="RGB").convert("YCbCr"))
    # libjpeg hands YCCK out as inverted CMYK and Pillow inverts Adobe CMYK back, so the file
    # must hold YCbCr(C, M, Y) and 255 - K; Pillow's writer inverts everything once more.
    stored = np.dstack([255 - ycc, cmyk[..., 3:]]).astype(np.uint8)
    data = bytearray(encode(Image.fromarray(stored, mode="CMYK"), "JPEG", quality=100))
    adobe = data.index(b"Adobe")
    assert data[adobe + 11] == 0
    data[adobe + 11] = 2
    decoded = decode(bytes(data), LIMITS)
    assert_quadrants(decoded.image, 12)


def test_greyscale_jpeg_becomes_three_equal_channels() -> None:
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1)), mode="L")
    decoded = decode(encode(grey, "JPEG", quality=95), LIMITS)
    pixels = np.asarray(decoded.image)
    assert pixels.shape == (16, 64, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 1], pixels[..., 2])
    assert abs(int(pixels[8, 32, 0]) - 128) <= 4


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16).repeat(4, axis=0)
    data = encode(Image.fromarray(values), "PNG")
    pixels = np.asarray(decode(data, LIMITS).image)
    assert pixels[0, :, 0].tolist() == [0, 64, 128, 255]
    assert pixels[0, :, 1].tolist() == [0, 64, 128, 255]


def test_sixteen_bit_rgb_png_is_scaled() -> None:
    pixels16 = (quadrants().astype(np.uint16) * 257).astype(np.uint16)
    pixels16[0, 0] = (257 * 100, 257 * 150, 257 * 200)
    decoded = decode(png16_rgb(pixels16), LIMITS)
    assert_quadrants(decoded.image, 0)
    assert np.asarray(decoded.image)[0, 0].tolist() == [100, 150, 200]


def test_float_tiff_in_unit_range_is_scaled() -> None:
    values = np.array([[0.0, 0.5, 1.0]], np.float32)
    pixels = np.asarray(decode(encode(Image.fromarray(values, mode="F"), "TIFF"), LIMITS).image)
    assert pixels[0, :, 0].tolist() == [0, 128, 255]


def test_32_bit_integer_tiff_with_16_bit_values_is_scaled() -> None:
    values = np.array([[0, 257 * 64, 65535]], np.int32)
    pixels = np.asarray(decode(encode(Image.fromarray(values, mode="I"), "TIFF"), LIMITS).image)
    assert pixels[0, :, 0].tolist() == [0, 64, 255]


def test_bilevel_image_decodes() -> None:
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    pixels = np.asarray(decode(encode(bits, "PNG"), LIMITS).image)
    assert pixels[:, :, 0].tolist() == [[0, 255], [255, 0]]


# ----------------------------------------------------------------------------- transparency


def test_transparent_png_is_composited_on_white() -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 0)  # fully transparent red
    rgba[:, 10:] = (255, 0, 0, 128)  # half-transparent red
    pixels = np.asarray(decode(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), LIMITS).image)
    assert pixels[5, 5].tolist() == [255, 255, 255]
    assert pixels[5, 15, 0] == 255
    assert abs(int(pixels[5, 15, 1]) - 127) <= 1
    assert abs(int(pixels[5, 15, 2]) - 127) <= 1


def test_grey_with_alpha_is_composited_on_white() -> None:
    la = np.zeros((10, 10, 2), np.uint8)
    la[:, :5] = (0, 0)
    la[:, 5:] = (0, 255)
    pixels = np.asarray(decode(encode(Image.fromarray(la, mode="LA"), "PNG"), LIMITS).image)
    assert pixels[5, 2].tolist() == [255, 255, 255]
    assert pixels[5, 7].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_is_composited_on_white(fmt: str) -> None:
    palette_image = Image.new("P", (10, 10), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    palette_image.paste(1, (5, 0, 10, 10))
    data = encode(palette_image, fmt, transparency=0)
    pixels = np.asarray(decode(data, LIMITS).image)
    assert pixels[5, 2].tolist() == [255, 255, 255]  # transparent black → white
    assert pixels[5, 7].tolist() == [255, 0, 0]


def test_webp_with_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, 8:] = (0, 0, 255, 255)
    data = encode(Image.fromarray(rgba, mode="RGBA"), "WEBP", lossless=True)
    pixels = np.asarray(decode(data, LIMITS).image)
    assert pixels[8, 2].tolist() == [255, 255, 255]
    assert pixels[8, 12].tolist() == [0, 0, 255]


# -------------------------------------------------------------------------------- animation


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})],  # PNG: APNG
)
def test_animation_gives_its_first_frame(fmt: str, options: dict[str, object]) -> None:
    first = Image.fromarray(quadrants())
    second = Image.new("RGB", first.size, (255, 0, 255))
    third = Image.new("RGB", first.size, (0, 255, 255))
    data = encode(first, fmt, save_all=True, append_images=[second, third], duration=100, **options)
    check = Image.open(io.BytesIO(data))
    assert getattr(check, "n_frames", 1) == 3
    assert_quadrants(decode(data, LIMITS).image, 0)


# ------------------------------------------------------------------------------- draft mode


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    photo = Image.fromarray(quadrants()).resize((6000, 4000), Image.Resampling.NEAREST)
    return encode(photo, "JPEG", quality=85)


def test_big_jpeg_decodes_at_reduced_scale_keeping_min_side(big_jpeg: bytes) -> None:
    decoded = decode(big_jpeg, LIMITS, min_side=256)
    assert (decoded.width, decoded.height) == (6000, 4000)  # the original, not the draft
    assert decoded.image.size == (750, 500)  # 1/8 scale
    assert_quadrants(decoded.image, 12)


@pytest.mark.parametrize(("min_side", "expected"), [(600, (1500, 1000)), (1100, (3000, 2000))])
def test_draft_never_goes_below_min_side(
    big_jpeg: bytes, min_side: int, expected: tuple[int, int]
) -> None:
    decoded = decode(big_jpeg, LIMITS, min_side=min_side)
    assert decoded.image.size == expected
    assert min(decoded.image.size) >= min_side


def test_without_min_side_a_big_jpeg_decodes_in_full(big_jpeg: bytes) -> None:
    assert decode(big_jpeg, LIMITS).image.size == (6000, 4000)


def test_draft_and_rotation_together_report_the_upright_original_size() -> None:
    upright = Image.fromarray(quadrants()).resize((3000, 2000), Image.Resampling.NEAREST)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 2000 x 3000, displayed via tag 6
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=85, exif=exif.tobytes())
    decoded = decode(data, LIMITS, min_side=256)
    assert (decoded.width, decoded.height) == (3000, 2000)
    assert decoded.image.size == (750, 500)  # 1/4: 1/8 would leave a 250-pixel side
    assert_quadrants(decoded.image, 12)


def test_small_jpeg_is_not_reduced() -> None:
    data = encode(Image.fromarray(quadrants(500, 375)), "JPEG", quality=90)
    assert decode(data, LIMITS, min_side=256).image.size == (500, 375)


# ------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def jpeg_photo() -> bytes:
    return encode(Image.fromarray(sample_photo("astronaut")), "JPEG", quality=90)


def reason_of(data: bytes, limits: ImageSettings = LIMITS) -> TaggerError:
    with pytest.raises(TaggerError) as caught:
        decode(data, limits)
    error = caught.value
    assert error.reason and "\n" not in error.reason
    return error


def test_empty_bytes_are_empty_input() -> None:
    assert isinstance(reason_of(b""), EmptyInput)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>", "HTML"),
        (b"  \n<html lang='en'><body>Not found</body></html>", "HTML"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(100), "ZIP"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b'{"error": "AccessDenied"}', "JSON"),
        (b"AccessDenied: the request signature does not match\n", "text"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64), "video"),
    ],
)
def test_other_documents_saved_as_photos_are_named(data: bytes, named: str) -> None:
    error = reason_of(data)
    assert isinstance(error, NotAnImage)
    assert named in error.reason
    assert error.code == "not_an_image"


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(7).bytes(4096)
    assert isinstance(reason_of(noise), NotAnImage)


@pytest.mark.parametrize("keep", [2, 200, 2000])
def test_jpeg_cut_short_is_corrupt(jpeg_photo: bytes, keep: int) -> None:
    error = reason_of(jpeg_photo[:keep])
    assert isinstance(error, CorruptImage)
    assert "JPEG" in error.reason


def test_jpeg_cut_in_half_is_corrupt(jpeg_photo: bytes) -> None:
    assert isinstance(reason_of(jpeg_photo[: len(jpeg_photo) // 2]), CorruptImage)


def test_jpeg_missing_only_its_end_marker_is_truncated_too(jpeg_photo: bytes) -> None:
    # A download cut at the very end looks like this; an intact file always has its marker.
    assert jpeg_photo.endswith(b"\xff\xd9")
    assert isinstance(reason_of(jpeg_photo[:-2]), TruncatedImage)
    assert decode(jpeg_photo, LIMITS).image.size == (512, 512)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_other_formats_cut_in_half_are_corrupt(fmt: str) -> None:
    data = encode(Image.fromarray(sample_photo("astronaut")), fmt)
    assert isinstance(reason_of(data[: len(data) // 2]), CorruptImage)


def test_heic_cut_in_half_is_corrupt() -> None:
    data = heif_bytes(Image.fromarray(sample_photo("astronaut")), quality=80)
    assert isinstance(reason_of(data[: len(data) // 2]), CorruptImage)


def test_png_with_a_damaged_chunk_is_corrupt() -> None:
    data = bytearray(encode(Image.fromarray(quadrants()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 20] = b"\x00" * 10
    assert isinstance(reason_of(bytes(data)), CorruptImage)


def test_too_many_bytes_is_refused_before_decoding(jpeg_photo: bytes) -> None:
    limits = ImageSettings(max_bytes=len(jpeg_photo) - 1)
    error = reason_of(jpeg_photo, limits)
    assert isinstance(error, ImageTooLarge)
    assert error.code == "too_large"
    decode(jpeg_photo, ImageSettings(max_bytes=len(jpeg_photo)))  # exactly at the limit is fine


def test_too_many_pixels_is_refused() -> None:
    data = encode(Image.fromarray(quadrants(100, 100)), "PNG")
    error = reason_of(data, ImageSettings(max_pixels=9_999))
    assert isinstance(error, ImageTooLarge)
    assert "100x100" in error.reason
    decode(data, ImageSettings(max_pixels=10_000))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [12_000, 30_000])
def test_decompression_bomb_header_is_refused_without_decoding(side: int) -> None:
    """A PNG whose header claims side x side pixels but holds almost no data: it must be refused
    from the header alone (12000² is under Pillow's own bound, 30000² over it)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png_chunk(b"IEND", b"")
    )
    error = reason_of(data)
    assert isinstance(error, ImageTooLarge)


# ------------------------------------------------------------------------------- truncation


def cut_with_end_marker(data: bytes, fraction: float, marker: bytes = b"\xff\xd9") -> bytes:
    return data[: int(len(data) * fraction)] + marker


JPEG_KINDS: dict[str, dict[str, object]] = {
    "baseline": {"quality": 90},
    "progressive": {"quality": 90, "progressive": True},
    "restart-markers": {"quality": 90, "restart_marker_blocks": 2},
    "optimised-444": {"quality": 95, "optimize": True, "subsampling": 0},
}


@pytest.fixture(scope="module", params=list(JPEG_KINDS))
def jpeg_kind(request: pytest.FixtureRequest) -> bytes:
    options = JPEG_KINDS[request.param]
    return encode(Image.fromarray(sample_photo("astronaut")), "JPEG", **options)


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("with_end_marker", [True, False])
@pytest.mark.parametrize("min_side", [None, 256])
def test_jpeg_cut_short_is_truncated_even_with_an_end_marker_appended(
    jpeg_kind: bytes, fraction: float, with_end_marker: bool, min_side: int | None
) -> None:
    """libjpeg pads a scan that hits a marker early with grey and only warns; a quarter of a
    JPEG plus FFD9 used to be tagged from 70% grey pixels."""
    data = jpeg_kind[: int(len(jpeg_kind) * fraction)] + (b"\xff\xd9" if with_end_marker else b"")
    with pytest.raises(TruncatedImage) as caught:
        decode(data, LIMITS, min_side=min_side)
    assert caught.value.code == "truncated"
    assert "JPEG" in caught.value.reason and "\n" not in caught.value.reason


def test_progressive_jpeg_cut_inside_its_last_scan_is_truncated() -> None:
    """Every coefficient band is declared by then, so only decoding tells: the last scan
    (the luma refinement, a quarter of the file) ran out of data."""
    data = encode(Image.fromarray(sample_photo("chelsea")), "JPEG", quality=90, progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    cut = last_scan + (len(data) - last_scan) // 2
    with pytest.raises(TruncatedImage):
        decode(data[:cut] + b"\xff\xd9", LIMITS)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "camera"])
@pytest.mark.parametrize("kind", list(JPEG_KINDS))
@pytest.mark.parametrize("min_side", [None, 64, 256])
def test_intact_jpegs_are_never_taken_for_truncated(
    name: str, kind: str, min_side: int | None
) -> None:
    data = encode(Image.fromarray(sample_photo(name)), "JPEG", **JPEG_KINDS[kind])
    reference = Image.open(io.BytesIO(data))
    if min_side is not None:
        reference.draft("RGB", (min_side, min_side))
    reference = reference.convert("RGB")
    decoded = decode(data, LIMITS, min_side=min_side)
    if decoded.image.size == reference.size:  # not reduced further: pixel for pixel the same
        assert decoded.image.tobytes() == reference.tobytes()


@pytest.mark.parametrize(
    "trailer",
    [
        b"\x00" * 4096,  # padding
        b"\xff\xd8\xff\xe1\x00\x10junk and more" + bytes(range(256)) * 8,  # a preview's start
        b"\xff\xd9\xff\xd9garbage\xff",  # stray markers
    ],
)
@pytest.mark.parametrize("progressive", [False, True])
def test_trailing_data_after_the_end_marker_is_ignored(trailer: bytes, progressive: bool) -> None:
    photo = sample_photo("coffee")
    data = encode(Image.fromarray(photo), "JPEG", quality=90, progressive=progressive)
    decoded = decode(data + trailer, LIMITS)
    assert decoded.image.tobytes() == decode(data, LIMITS).image.tobytes()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_png_cut_short_is_truncated_with_or_without_iend(fraction: float) -> None:
    data = encode(Image.fromarray(sample_photo("astronaut")), "PNG")
    chunks = png_chunks(data)
    idat = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    head = b"".join(png_chunk(k, p) for k, p in chunks if k not in (b"IDAT", b"IEND"))
    # Cut as a download is, cut and IEND appended, and cut with a consistent, checksummed
    # IDAT chunk (the container looks whole; the zlib stream and the rows are not).
    rewritten = (
        data[:8]
        + head
        + png_chunk(b"IDAT", idat[: int(len(idat) * fraction)])
        + png_chunk(b"IEND", b"")
    )
    for cut in (
        data[: int(len(data) * fraction)],
        cut_with_end_marker(data, fraction, data[-12:]),
        rewritten,
    ):
        error = reason_of(cut)
        assert isinstance(error, TruncatedImage), error
        assert error.code == "truncated"


def webp_with_image_cut(data: bytes, fraction: float) -> bytes:
    """The VP8/VP8L chunk cut and every size field rewritten to match: a self-consistent file."""
    body, pos = b"", 12
    while pos < len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        payload = data[pos + 8 : pos + 8 + length]
        if kind in (b"VP8 ", b"VP8L"):
            payload = payload[: int(length * fraction)]
        body += kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)
        pos += 8 + length + (length & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("options", [{"quality": 90}, {"lossless": True}])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_webp_cut_short_is_truncated_even_with_consistent_sizes(
    options: dict[str, object], fraction: float
) -> None:
    data = encode(Image.fromarray(sample_photo("astronaut")), "WEBP", **options)
    for cut in (data[: int(len(data) * fraction)], webp_with_image_cut(data, fraction)):
        error = reason_of(cut)
        assert isinstance(error, TruncatedImage), error
        assert error.code == "truncated"


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_other_formats_cut_short_are_truncated(fmt: str) -> None:
    data = encode(Image.fromarray(sample_photo("astronaut")), fmt)
    assert isinstance(reason_of(data[: len(data) // 2]), TruncatedImage)


# ---------------------------------------------------------------------------------- memory


def test_decoded_bytes_are_bounded_by_the_bytes_per_pixel_of_the_mode() -> None:
    """The same 100x100 pixels: 10 000 bytes as 8-bit grey, 20 000 as 16-bit, 40 000 as RGB
    (Pillow stores three 8-bit bands in four bytes)."""
    limits = ImageSettings(max_decoded_bytes=15_000)
    grey8 = encode(Image.new("L", (100, 100), 128), "PNG")
    grey16 = encode(Image.fromarray(np.full((100, 100), 30000, np.uint16)), "PNG")
    rgb = encode(Image.new("RGB", (100, 100), RED), "PNG")
    assert decode(grey8, limits).image.size == (100, 100)
    for data, needed in ((grey16, 20_000), (rgb, 40_000)):
        error = reason_of(data, limits)
        assert isinstance(error, ImageTooLarge)
        assert error.code == "too_large"
        assert f"{needed} bytes" in error.reason and "15000" in error.reason
    assert decode(grey16, ImageSettings(max_decoded_bytes=20_000)).image.size == (100, 100)


def test_a_jpeg_is_bounded_by_the_size_it_is_decoded_at(big_jpeg: bytes) -> None:
    limits = ImageSettings(max_decoded_bytes=6000 * 4000 * 4 - 1)
    assert isinstance(reason_of(big_jpeg, limits), ImageTooLarge)  # full size: over
    assert decode(big_jpeg, limits, min_side=256).image.size == (750, 500)  # 1/8 scale: fine


class LoadWatch:
    """Counts PNG decodes running at once (each made to last a while so overlaps show)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = PngImagePlugin.PngImageFile.load

        def load(image: PngImagePlugin.PngImageFile) -> object:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(0.2)
                return original(image)
            finally:
                with self.lock:
                    self.running -= 1

        monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)


@pytest.mark.parametrize(("budget", "overlapping"), [(8 * 1024 * 1024, 1), (10**9, 2)])
def test_the_budget_keeps_big_decodes_from_overlapping(
    monkeypatch: pytest.MonkeyPatch, budget: int, overlapping: int
) -> None:
    """Two 1000x1000 RGB PNGs need ~4 MB each plus conversions: an 8 MiB budget runs them one
    after the other, a large one side by side."""
    watch = LoadWatch()
    watch.install(monkeypatch)
    decoder = ImageDecoder(ImageSettings(decode_budget_bytes=budget))
    photo = encode(Image.fromarray(quadrants(1000, 1000)), "PNG")
    threads = [threading.Thread(target=decoder.decode, args=(photo, 256)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert watch.most == overlapping
    assert decoder.budget.peak <= budget
    assert decoder.budget.in_use == 0


def test_a_decode_waits_while_the_budget_is_held() -> None:
    decoder = ImageDecoder(ImageSettings(decode_budget_bytes=50 * 1024 * 1024))
    photo = encode(Image.fromarray(quadrants(2000, 2000)), "PNG")
    done = threading.Event()

    def run() -> None:
        decoder.decode(photo, 256)
        done.set()

    with decoder.budget.reserve(decoder.budget.capacity):
        worker = threading.Thread(target=run)
        worker.start()
        assert not done.wait(0.5)
    assert done.wait(10)
    worker.join()


@pytest.fixture(scope="module")
def huge_palette_png() -> bytes:
    """9999x9999, two colours: a 1-bit PNG of ~20 KB that is 100 MB as Pillow's P picture and
    was 400 MB more as RGBA/RGB before any reduction."""
    picture = Image.new("P", (9999, 9999), 0)
    picture.putpalette([*RED, *GREEN, *BLUE, *YELLOW])
    picture.paste(1, (5000, 0, 9999, 5000))
    picture.paste(2, (0, 5000, 5000, 9999))
    picture.paste(3, (5000, 5000, 9999, 9999))
    return encode(picture, "PNG")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_palette_png_is_reduced_without_a_full_size_rgb_copy(huge_palette_png: bytes) -> None:
    assert len(huge_palette_png) < 100_000
    decoder = ImageDecoder(LIMITS)
    decoded = decoder.decode(huge_palette_png, min_side=256)
    assert (decoded.width, decoded.height) == (9999, 9999)
    assert decoded.image.size == (257, 257)  # 1/39: the smallest whole factor keeping 256
    assert_quadrants(decoded.image, 0)
    # What it reserved: the 100 MB palette picture, the decoder's allowance of twice that, and
    # bands; no full-size RGBA term. Real RSS is measured in tests/integration/test_memory.py.
    picture = 9999 * 9999
    assert decoder.budget.peak < 3 * picture + 40 * 1024 * 1024


@pytest.fixture(scope="module")
def huge_16_bit_tiff() -> bytes:
    """9000x9000 16-bit grey, rows of one value each: 162 MB of pixels in ~270 KB."""
    rows = (np.arange(9000, dtype=np.uint32) * 7).astype(np.uint16)
    return encode(
        Image.fromarray(np.repeat(rows[:, None], 9000, axis=1)), "TIFF", compression="tiff_deflate"
    )


def test_huge_16_bit_tiff_is_scaled_to_8_bits_and_reduced_without_float_copies(
    huge_16_bit_tiff: bytes,
) -> None:
    assert len(huge_16_bit_tiff) < 400_000
    decoder = ImageDecoder(LIMITS)
    decoded = decoder.decode(huge_16_bit_tiff, min_side=256)
    assert (decoded.width, decoded.height) == (9000, 9000)
    assert decoded.image.size == (258, 258)  # 1/35, the last box partial
    column = np.asarray(decoded.image)[:, 0, 0].astype(int)
    expected = [
        round(float(np.mean(np.arange(y * 35, min(y * 35 + 35, 9000)) * 7)) / 257)
        for y in range(258)
    ]
    assert np.abs(column - np.array(expected)).max() <= 1  # scaled, not clipped white
    # The 162 MB of 16-bit pixels, libtiff's strip buffer, the decoder's allowance of twice
    # the picture and bands; no float32 term (324 MB more). Real RSS: test_memory.py.
    picture = 9000 * 9000 * 2
    assert decoder.budget.peak < 4 * picture + 40 * 1024 * 1024


def test_reduction_keeps_orientation_and_colours() -> None:
    stored = Image.fromarray(np.ascontiguousarray(STORED[6](quadrants(1200, 800))))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored.convert("RGBA"), "PNG", exif=exif.tobytes())
    decoded = decode(data, LIMITS, min_side=256)
    assert (decoded.width, decoded.height) == (1200, 800)
    assert decoded.image.size == (400, 267)  # 1/3, turned upright
    assert_quadrants(decoded.image, 0)


# --------------------------------------------------------------------------------- load_tensor

SPEC = PreprocessSpec(size=224)


def test_load_tensor_decodes_with_draft_and_preprocesses(big_jpeg: bytes) -> None:
    tensor, decoded = load_tensor(big_jpeg, LIMITS, SPEC)
    assert isinstance(decoded, DecodedImage)
    assert tensor.shape == (224, 224, 3)
    assert (decoded.width, decoded.height) == (6000, 4000)
    assert decoded.image.size == (750, 500)  # 1/8 scale still covers the 256 side
    full = preprocess(decode(big_jpeg, LIMITS).image, SPEC)
    assert np.abs(tensor - full).mean() < 0.05


def test_load_tensor_passes_decode_errors_through() -> None:
    with pytest.raises(NotAnImage):
        load_tensor(b"<html></html>", LIMITS, SPEC)
