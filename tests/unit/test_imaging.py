"""Decoding real-world uploads and turning them into the model's tensor.

Every photo here is made in memory: a four-colour quadrant pattern (distinct under all eight
flips and rotations, so a wrong orientation or a channel swap shows), saved in each format.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pillow_heif
import pytest
from PIL import Image
from skimage import data as skdata

from tagger.config import ImageSettings
from tagger.errors import CorruptImage, EmptyInput, ImageTooLarge, NotAnImage, TaggerError
from tagger.imaging import DecodedImage, decode, load_tensor, preprocess
from tagger.schemas import PreprocessSpec

LIMITS = ImageSettings()
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


def test_jpeg_missing_only_its_end_marker_is_corrupt_too(jpeg_photo: bytes) -> None:
    # Accepting it would mean grey-filling every truncated JPEG; see the module docstring.
    assert jpeg_photo.endswith(b"\xff\xd9")
    assert isinstance(reason_of(jpeg_photo[:-2]), CorruptImage)
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


# ------------------------------------------------------------------------------- preprocess

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
