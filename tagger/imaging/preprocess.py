"""A decoded picture → one normalised float32 element of the model's NHWC batch."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from tagger.schemas import PreprocessSpec


def preprocess(image: Image.Image, spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """Resize the shorter side to ``spec.resize_to``, centre-crop ``spec.size`` and normalise
    to ``(x - mean) / std``: one (size, size, 3) float32 RGB element of an NHWC batch.

    The resize and the crop happen in one Pillow call (its ``box`` argument), so only the
    pixels that survive the crop are resampled and no intermediate image is made. Pillow's bicubic
    filter antialiases when shrinking, so a big photo is not aliased into noise.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    size = spec.size
    scale = spec.resize_to / min(width, height)
    resized_w = max(size, round(width * scale))
    resized_h = max(size, round(height * scale))
    left = (resized_w - size) // 2
    top = (resized_h - size) // 2
    sx = resized_w / width
    sy = resized_h / height
    box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
    cropped = image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    tensor = np.array(cropped, dtype=np.float32)
    # Normalise through a (size, size*3) view with whole-row mean/std vectors: broadcasting a
    # length-3 vector over the last axis runs numpy's inner loop 3 elements at a time, ~9x slower.
    rows = tensor.reshape(size, size * 3)
    rows -= np.tile(np.asarray(spec.mean, dtype=np.float32), size)
    rows *= np.tile(np.float32(1.0) / np.asarray(spec.std, dtype=np.float32), size)
    return tensor
