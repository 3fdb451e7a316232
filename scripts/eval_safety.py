"""Score a folder of photos with the ``safety`` analyser: median, percentiles, what is flagged.

Used to choose the default nsfw threshold and to check that everyday photos are not tagged:
on the ImageNet dev photos the target is a median below 0.01 and at most 1 % flagged. Photos
are read in place and never copied; only their names and scores are printed.

    python scripts/eval_safety.py [FOLDER] [--threshold 0.8] [--artifact DIR]

Without ``--artifact`` the artifact is built from the installed wheel into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tagger.analyzers.safety import DEFAULT_NSFW_THRESHOLD, SafetyScorer, preprocess
from tagger.model.build_safety import DEFAULT_SOURCE, SOURCES, build_safety_artifact

DEFAULT_FOLDER = Path("/work/shared/data/imagenet-dev")
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PERCENTILES = (50, 75, 90, 95, 99)


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def load(path: Path) -> Image.Image:
    """Decoded upright RGB, as the pipeline hands photos to the analysers."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def evaluate(folder: Path, artifact: Path, threshold: float, batch: int, threads: int) -> int:
    scorer = SafetyScorer(artifact, threshold=threshold, max_batch=batch, intra_op_threads=threads)
    paths = photos_in(folder)
    if not paths:
        print(f"no photos in {folder}")
        return 1
    scores: list[float] = []
    prep_seconds = infer_seconds = 0.0
    spec = scorer.artifact.manifest.preprocess
    for start in range(0, len(paths), batch):
        images = [load(p) for p in paths[start : start + batch]]
        began = time.perf_counter()
        tensor = preprocess(images, spec)
        prepared = time.perf_counter()
        scores.extend(scorer.score_batch(tensor))
        infer_seconds += time.perf_counter() - prepared
        prep_seconds += prepared - began
    values = np.asarray(scores)
    flagged = [(s, p) for s, p in zip(scores, paths, strict=True) if s >= threshold]
    manifest = scorer.artifact.manifest
    weights = manifest.weights
    source = f"{weights.package} {weights.package_version}"
    print(f"model     {manifest.name} {scorer.version} from {source}")
    print(f"photos    {len(paths)} in {folder}")
    print(f"median    {np.median(values):.5f}   mean {values.mean():.5f}   max {values.max():.5f}")
    print("pctiles   " + "  ".join(f"p{q}={np.percentile(values, q):.4f}" for q in PERCENTILES))
    for cut in (0.2, 0.5, 0.8):
        print(f"  >= {cut:.1f}  {int((values >= cut).sum()):4d}  ({(values >= cut).mean():.1%})")
    share = len(flagged) / len(paths)
    print(f"flagged   {len(flagged)} of {len(paths)} ({share:.1%}) at threshold {threshold}")
    for score, path in sorted(flagged, reverse=True):
        print(f"  {score:.4f}  {path.name}")
    print("highest:")
    for index in np.argsort(-values)[:10]:
        print(f"  {values[index]:.4f}  {paths[index].name}")
    prep_ms, infer_ms = prep_seconds / len(paths) * 1e3, infer_seconds / len(paths) * 1e3
    print(f"ms/photo  preprocess {prep_ms:.1f}  inference {infer_ms:.1f}  "
          f"(batch {batch}, threads {threads})")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--threshold", type=float, default=DEFAULT_NSFW_THRESHOLD)
    parser.add_argument("--artifact", type=Path, help="a built safety artifact folder")
    parser.add_argument("--source", choices=sorted(SOURCES), default=DEFAULT_SOURCE)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    if args.artifact is not None:
        return evaluate(args.folder, args.artifact, args.threshold, args.batch, args.threads)
    with tempfile.TemporaryDirectory(prefix="safety-eval-") as scratch:
        artifact = Path(scratch) / "open-nsfw"
        build_safety_artifact(artifact, args.source)
        return evaluate(args.folder, artifact, args.threshold, args.batch, args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
