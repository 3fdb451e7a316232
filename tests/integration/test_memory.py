"""A worker process stays inside its memory budget whatever it is sent.

The hostile inputs from the issue, fed through one :class:`ImageDecoder` the way a worker does
(eight I/O threads sharing it, default limits): eight 9000x9000 16-bit TIFFs of ~250 KB each at
once (8.9 GB before the fix), then a 9999x9999 palette PNG of ~20 KB (678 MB). They run in a
fresh interpreter so its peak RSS is theirs alone, baseline (Python, numpy, Pillow) included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.config import Settings

pytestmark = pytest.mark.integration

MIB = 1024 * 1024

WORKER = textwrap.dedent(
    """
    import json, resource, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import psutil

    from tagger.config import Settings
    from tagger.imaging import ImageDecoder
    from tagger.schemas import PreprocessSpec

    folder = Path(sys.argv[1])
    settings = Settings()
    decoder = ImageDecoder(settings.image)
    spec = PreprocessSpec(size=224)
    process = psutil.Process()

    def peak_mib() -> float:
        # VmHWM is this process's own high-water mark; ru_maxrss is not: Linux carries the
        # parent's peak over fork and exec, so under a 2 GB pytest it starts at 2 GB.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def load(path: Path) -> tuple[str, list[int]]:
        tensor, decoded = decoder.load_tensor(path.read_bytes(), spec)
        return decoded.format, [decoded.width, decoded.height, *decoded.image.size]

    report = {"baseline_mib": process.memory_info().rss / 2**20}
    started = time.monotonic()
    tiffs = sorted(folder.glob("*.tif"))
    with ThreadPoolExecutor(settings.fetch.io_threads) as pool:
        report["tiffs"] = list(pool.map(load, tiffs))
    report["tiff_seconds"] = time.monotonic() - started
    report["tiff_peak_mib"] = peak_mib()
    report["after_tiffs_mib"] = process.memory_info().rss / 2**20
    report["png"] = load(folder / "palette.png")
    report["peak_mib"] = peak_mib()
    report["after_mib"] = process.memory_info().rss / 2**20
    report["budget_peak_mib"] = decoder.budget.peak / 2**20
    print(json.dumps(report))
    """
)


def write_hostile_inputs(folder: Path) -> dict[str, int]:
    """Eight 16-bit greyscale 9000x9000 TIFFs (a vertical gradient: every row one value, so
    deflate squeezes 162 MB into ~270 KB) and a two-colour 9999x9999 palette PNG."""
    sizes: dict[str, int] = {}
    column = np.arange(9000, dtype=np.uint32)
    for index in range(8):
        values = ((column * 7 + index * 1000) % 65536).astype(np.uint16)
        pixels = np.repeat(values[:, None], 9000, axis=1)
        path = folder / f"grey16-{index}.tif"
        Image.fromarray(pixels).save(path, "TIFF", compression="tiff_deflate")
        sizes[path.name] = path.stat().st_size
        del pixels
    palette = Image.new("P", (9999, 9999), 0)
    palette.putpalette([255, 255, 255, 200, 30, 30])
    palette.paste(1, (2000, 2000, 8000, 7000))
    path = folder / "palette.png"
    palette.save(path, "PNG")
    sizes[path.name] = path.stat().st_size
    return sizes


def test_hostile_photos_stay_inside_the_worker_memory_budget(tmp_path: Path) -> None:
    sizes = write_hostile_inputs(tmp_path)
    assert all(size < 400_000 for size in sizes.values()), sizes  # tiny files, huge pictures
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    budget_mib = Settings().worker.max_memory_mb
    print(
        f"\npeak RSS {report['peak_mib']:.0f} MiB (budget {budget_mib} MiB): "
        f"baseline {report['baseline_mib']:.0f} MiB, "
        f"8 x 16-bit 9000x9000 TIFF on 8 threads peak {report['tiff_peak_mib']:.0f} MiB "
        f"in {report['tiff_seconds']:.1f} s, RSS after them {report['after_tiffs_mib']:.0f} MiB; "
        f"after the 9999x9999 palette PNG {report['after_mib']:.0f} MiB; "
        f"decode budget peak {report['budget_peak_mib']:.0f} MiB; inputs {sizes}"
    )
    for fmt, (width, height, kept_w, kept_h) in [*report["tiffs"], report["png"]]:
        assert fmt in ("TIFF", "PNG")
        assert (width, height) in ((9000, 9000), (9999, 9999))
        assert 256 <= min(kept_w, kept_h) < 512  # reduced as it loaded, not kept full size
    assert report["peak_mib"] < budget_mib
    assert report["budget_peak_mib"] <= Settings().image.decode_budget_bytes / MIB
    # Memory comes back: what is held afterwards is close to the baseline, not gigabytes.
    assert report["after_mib"] < report["baseline_mib"] + 256
