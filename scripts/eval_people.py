"""Person precision/recall of the ``objects`` detector on a small hand-labelled check set.

Usage: ``python scripts/eval_people.py ARTIFACT_DIR [--bench] [--threads N]``

Every photo is one scikit-image ships inside its wheel (nothing is downloaded) or a crop, flip,
rescale or re-encode of one, labelled by hand below: ``True`` when a person is clearly visible.
The set is small (two distinct people, the astronaut and the cameraman), so it checks that the
detector and its threshold are sane, not how well it does on a real photo library.
``--bench`` also times the detector at batch 1 and batch 8 on the same photos.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from skimage import data

from tagger.analyzers.objects import ObjectDetector

Transform = Callable[[Image.Image], Image.Image]
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def _photo(name: str) -> Image.Image:
    pixels = getattr(data, name)()
    if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
        pixels = pixels[0]
    return Image.fromarray(np.asarray(pixels)).convert("RGB")


def _crop(box: tuple[float, float, float, float]) -> Transform:
    def crop(image: Image.Image) -> Image.Image:
        w, h = image.size
        return image.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))

    return crop


def _jpeg(quality: int) -> Transform:
    def encode(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return encode


def _scale(side: int) -> Transform:
    return lambda image: image.resize((side, side * image.height // image.width))


def _same(image: Image.Image) -> Image.Image:
    return image


_GREY: Transform = lambda image: ImageOps.grayscale(image).convert("RGB")  # noqa: E731
_DARK: Transform = lambda image: ImageEnhance.Brightness(image).enhance(0.6)  # noqa: E731
_BRIGHT: Transform = lambda image: ImageEnhance.Brightness(image).enhance(1.3)  # noqa: E731
_ROTATE: Transform = lambda image: image.rotate(6, expand=False, fillcolor=(128, 128, 128))  # noqa: E731

# (name, source photo, transform, a person is clearly visible)
CHECK_SET: tuple[tuple[str, str, Transform, bool], ...] = (
    ("astronaut", "astronaut", _same, True),
    ("astronaut-flip", "astronaut", ImageOps.mirror, True),
    ("astronaut-upper", "astronaut", _crop((0.0, 0.0, 0.75, 0.7)), True),
    ("astronaut-centre", "astronaut", _crop((0.12, 0.12, 0.88, 0.88)), True),
    ("astronaut-small", "astronaut", _scale(160), True),
    ("astronaut-jpeg30", "astronaut", _jpeg(30), True),
    ("astronaut-dark", "astronaut", _DARK, True),
    ("astronaut-grey", "astronaut", _GREY, True),
    ("astronaut-rotated", "astronaut", _ROTATE, True),
    ("camera", "camera", _same, True),
    ("camera-flip", "camera", ImageOps.mirror, True),
    ("camera-person", "camera", _crop((0.1, 0.0, 0.9, 1.0)), True),
    ("camera-small", "camera", _scale(200), True),
    ("camera-bright", "camera", _BRIGHT, True),
    ("camera-jpeg30", "camera", _jpeg(30), True),
    ("camera-rotated", "camera", _ROTATE, True),
    ("astronaut-flag", "astronaut", _crop((0.72, 0.55, 1.0, 1.0)), False),
    ("camera-sky", "camera", _crop((0.0, 0.0, 0.3, 0.25)), False),
    ("coffee", "coffee", _same, False),
    ("coffee-flip", "coffee", ImageOps.mirror, False),
    ("coffee-crop", "coffee", _crop((0.2, 0.1, 0.8, 0.9)), False),
    ("chelsea", "chelsea", _same, False),
    ("chelsea-flip", "chelsea", ImageOps.mirror, False),
    ("chelsea-grey", "chelsea", _GREY, False),
    ("rocket", "rocket", _same, False),
    ("rocket-crop", "rocket", _crop((0.25, 0.0, 0.75, 1.0)), False),
    ("immunohistochemistry", "immunohistochemistry", _same, False),
    ("coins", "coins", _same, False),
    ("moon", "moon", _same, False),
    ("page", "page", _same, False),
    ("text", "text", _same, False),
    ("clock", "clock", _same, False),
    ("hubble", "hubble_deep_field", _same, False),
    ("retina", "retina", _same, False),
    ("motorcycle", "stereo_motorcycle", _same, False),
    ("brick", "brick", _same, False),
    ("grass", "grass", _same, False),
    ("gravel", "gravel", _same, False),
    ("horse", "horse", _same, False),
    ("logo", "logo", _same, False),
)


def check_set() -> list[tuple[str, Image.Image, bool]]:
    photos: dict[str, Image.Image] = {}
    result = []
    for name, source, transform, person in CHECK_SET:
        if source not in photos:
            photos[source] = _photo(source)
        result.append((name, transform(photos[source]), person))
    return result


def precision_recall(scores: list[float], truth: list[bool], threshold: float) -> tuple[float, ...]:
    predicted = [score >= threshold for score in scores]
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, float(tp), float(fp), float(fn)


def bench(detector: ObjectDetector, images: list[Image.Image], batch: int) -> float:
    """Milliseconds per photo, resize included, after one warm-up batch."""
    detector.max_batch = batch
    detector.detect(images[:batch])
    start = time.perf_counter()
    rounds = 2
    for _ in range(rounds):
        detector.detect(images)
    return (time.perf_counter() - start) * 1000 / (rounds * len(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--bench", action="store_true", help="also time batch 1 and batch 8")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    # The lowest threshold evaluated, so every threshold above it can be scored from one run.
    detector = ObjectDetector(
        args.artifact, score_threshold=min(THRESHOLDS), intra_op_threads=args.threads
    )
    photos = check_set()
    results = detector.detect([image for _, image, _ in photos])
    scores: list[float] = []
    for (name, _, person), found in zip(photos, results, strict=True):
        best = max((o.score for o in found.objects if o.label == "person"), default=0.0)
        scores.append(best)
        others = ", ".join(f"{o.label} {o.score:.2f}" for o in found.objects if o.label != "person")
        print(f"{name:22} person={'yes' if person else 'no ':3} score={best:.3f}  {others}")
    truth = [person for _, _, person in photos]
    print(f"\n{sum(truth)} photos with a person, {len(truth) - sum(truth)} without")
    print("threshold  precision  recall   tp  fp  fn")
    for threshold in THRESHOLDS:
        p, r, tp, fp, fn = precision_recall(scores, truth, threshold)
        print(f"{threshold:9.2f}  {p:9.3f}  {r:6.3f}  {tp:3.0f} {fp:3.0f} {fn:3.0f}")
    if args.bench:
        images = [image for _, image, _ in photos][:32]
        for batch in (1, 8):
            print(f"batch {batch}: {bench(detector, images, batch):.1f} ms/photo")


if __name__ == "__main__":
    main()
