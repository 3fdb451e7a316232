"""``tagger bench --phone``: the service on the photos people upload, format by format.

The same pictures three ways: the folder's small JPEGs as they are, 12 MP phone JPEGs and
iPhone-like HEICs made from them (:mod:`tagger_dev.phone_photos`). For each it measures, on
this machine in one run:

- bytes per photo;
- decode CPU ms per photo on one thread: the whole picture (what a plain ``Image.open().load()``
  costs), tagger's decoder at the side the analysers need (JPEG: libjpeg's DCT scaling through
  Pillow's draft; HEIC: an embedded thumbnail when one is large enough, else the whole picture),
  and for JPEG simplejpeg's scaled decode (libjpeg-turbo too) for comparison;
- the enabled analysers' CPU ms per photo (prepare + analyse, one thread), and the WebP
  thumbnail's;
- the limit those set: cores x 1000 / (scaled decode + analysers + thumbnail), photos/s;
- the compute limit (the in-process flow on photos in memory, every core, the same per-photo
  work as a worker: decode, analysers, thumbnail);
- the service over local files and over S3 (moto), photos/s and MB/s;
- the peak resident memory of the largest worker process (a fresh worker per format).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import boto3
import psutil
from PIL import Image
from pydantic import BaseModel, Field

from tagger.analyzers.registry import create_analyzers, enabled_names
from tagger.config import Settings
from tagger.imaging import ImageDecoder
from tagger.schemas import Findings
from tagger.thumbnails import make_thumbnail
from tagger_dev.bench import BUCKET, Bench, private_services
from tagger_dev.devservers import CeleryWorker
from tagger_dev.phone_photos import PHONE_SIZE, make_phone_set

MB = 1_000_000
_T = TypeVar("_T")
TASKS_PER_PROCESS = 4
MIN_PER_TASK = 4


class FormatFigures(BaseModel):
    """One format's row of the table."""

    name: str
    photos: int
    photos_per_task: int
    size: str = Field(description="width x height of the first photo, as stored")
    mb_per_photo: float
    decode_full_ms: float = Field(description="CPU ms/photo, one thread, the whole picture")
    decode_scaled_ms: float = Field(
        description="CPU ms/photo, one thread, tagger's decoder at the analysers' side"
    )
    decode_simplejpeg_ms: float | None = Field(
        default=None, description="CPU ms/photo, simplejpeg's scaled decode (JPEG only)"
    )
    analysers_ms: float = Field(description="CPU ms/photo of the enabled analysers, one thread")
    thumbnail_ms: float = Field(description="CPU ms/photo of the WebP thumbnail, one thread")
    decode_analysers_limit: float = Field(
        description="photos/s that scaled decode + analysers + thumbnail allow on every core"
    )
    compute_limit: float
    service_local: float
    service_s3: float
    worker_peak_rss_mb: float = Field(description="largest worker process, peak RSS")

    @property
    def compute_ratio(self) -> float:
        return self.compute_limit / self.decode_analysers_limit

    @property
    def local_ratio(self) -> float:
        return self.service_local / self.compute_limit

    @property
    def s3_ratio(self) -> float:
        return self.service_s3 / self.compute_limit


class PhoneBenchReport(BaseModel):
    photos: int
    repeat: int
    cores: int
    worker_processes: int
    analyzers: list[str]
    precision: str = Field(description="the classifier's, fp32 or int8")
    memory_budget_mb: int
    formats: list[FormatFigures]


def _cpu_ms(items: Sequence[_T], work: Callable[[_T], object]) -> float:
    """Mean CPU ms per item of ``work`` over ``items``, after one warm-up. Process time, not
    thread time: libheif decodes tiles on threads of its own."""
    work(items[0])
    started = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - started) * 1000 / len(items)


def _full_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def _simplejpeg_ms(photos: Sequence[bytes], side: int) -> float | None:
    try:
        import simplejpeg
    except ImportError:
        return None
    return _cpu_ms(
        photos,
        lambda data: simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=side, min_height=side
        ),
    )


def _peak_rss_mb(pid: int) -> float:
    """The largest peak resident set (VmHWM) among the worker's processes."""
    peaks = []
    try:
        main = psutil.Process(pid)
        processes = [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in processes:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=0.0)


class _FormatRun:
    """Measures one format's row against the shared private servers."""

    def __init__(
        self, settings: Settings, workdir: Path, servers: list[object], repeat: int
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.servers = servers
        self.repeat = repeat
        self.s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url, region_name="us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)

    def measure(
        self, name: str, photos: list[tuple[str, bytes]], say: Callable[[str], None]
    ) -> FormatFigures:
        settings = self.settings
        data = [body for _, body in photos]
        cores = os.cpu_count() or 1
        processes = settings.worker.concurrency or cores
        one_thread = settings.model_copy(
            update={"model": settings.model.model_copy(update={"intra_op_threads": 1})}
        )
        analyzers = create_analyzers(one_thread)
        side = max(analyzer.min_side for analyzer in analyzers)
        decoder = ImageDecoder(settings.image)
        full_ms = _cpu_ms(data, _full_decode)
        scaled_ms = _cpu_ms(data, lambda body: decoder.decode(body, side))
        simple_ms = _simplejpeg_ms(data, side) if data[0].startswith(b"\xff\xd8") else None
        images = [decoder.decode(body, side).image for body in data]
        context: list[dict[str, Findings]] = [{} for _ in images]
        analysers_ms = sum(
            Bench.analyzer_cost(analyzer, images, context, settings.batch_size).total_ms
            for analyzer in analyzers
        )
        wanted = settings.thumbnails
        thumbnail_ms = (
            _cpu_ms(images, lambda image: make_thumbnail(image, wanted.side, wanted.quality))
            if wanted.enabled
            else 0.0
        )
        limit = cores * 1000 / (scaled_ms + analysers_ms + thumbnail_ms)
        say(
            f"   {name}: decode full {full_ms:.1f} ms, scaled {scaled_ms:.1f} ms"
            + (f", simplejpeg {simple_ms:.1f} ms" if simple_ms is not None else "")
            + f"; analysers {analysers_ms:.1f} ms; thumbnail {thumbnail_ms:.1f} ms; "
            f"limit {limit:.1f} photos/s"
        )
        # A task holds up to worker.batch_size (64) photos and runs on one process: a job of a
        # few dozen photos would be one task on one core. Every process gets TASKS_PER_PROCESS
        # tasks here, so the figure is the service's rate, not that of one busy process.
        per_task = max(
            MIN_PER_TASK,
            min(settings.worker.batch_size, len(photos) // (processes * TASKS_PER_PROCESS)),
        )
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"batch_size": per_task})}
        )
        bench = Bench(settings, photos, self.workdir, say, 0, self.repeat)
        compute = bench.compute_limit(settings)
        say(f"   {name}: compute limit {compute:.1f} photos/s")

        folder = self.workdir / "photos"
        for key, body in photos:
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
            (folder / key).write_bytes(body)
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda item: self.s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]),
                    photos,
                )
            )
        worker = CeleryWorker(
            settings, self.workdir / f"worker-{len(self.servers)}.log", concurrency=processes
        )
        self.servers.append(worker)
        worker.start(timeout=600)
        assert worker.process is not None
        local = bench.service(settings, [str(folder / key) for key, _ in photos], f"{name} local")
        say(f"   {name}: service, local files {local:.1f} photos/s")
        s3 = bench.service(settings, [f"s3://{BUCKET}/{key}" for key, _ in photos], f"{name} s3")
        say(f"   {name}: service, S3 {s3:.1f} photos/s")
        peak = _peak_rss_mb(worker.process.pid)
        worker.stop()
        with Image.open(io.BytesIO(data[0])) as first:
            size = f"{first.width}x{first.height}"
        return FormatFigures(
            name=name,
            photos=len(photos),
            photos_per_task=per_task,
            size=size,
            mb_per_photo=sum(len(body) for body in data) / len(data) / MB,
            decode_full_ms=full_ms,
            decode_scaled_ms=scaled_ms,
            decode_simplejpeg_ms=simple_ms,
            analysers_ms=analysers_ms,
            thumbnail_ms=thumbnail_ms,
            decode_analysers_limit=limit,
            compute_limit=compute,
            service_local=local,
            service_s3=s3,
            worker_peak_rss_mb=peak,
        )


def format_table(report: PhoneBenchReport) -> list[str]:
    """The per-format table, one line per figure and one column per format."""
    rows: list[tuple[str, Callable[[FormatFigures], str]]] = [
        ("photos", lambda f: str(f.photos)),
        ("photos per task", lambda f: str(f.photos_per_task)),
        ("stored size", lambda f: f.size),
        ("MB per photo", lambda f: f"{f.mb_per_photo:.2f}"),
        ("decode, full picture (ms)", lambda f: f"{f.decode_full_ms:.1f}"),
        ("decode, tagger scaled (ms)", lambda f: f"{f.decode_scaled_ms:.1f}"),
        (
            "decode, simplejpeg scaled (ms)",
            lambda f: "-" if f.decode_simplejpeg_ms is None else f"{f.decode_simplejpeg_ms:.1f}",
        ),
        ("analysers (ms)", lambda f: f"{f.analysers_ms:.1f}"),
        ("thumbnail (ms)", lambda f: f"{f.thumbnail_ms:.1f}"),
        ("A. limit of decode+analysers+thumb/s", lambda f: f"{f.decode_analysers_limit:.1f}"),
        ("B. compute limit (photos/s)", lambda f: f"{f.compute_limit:.1f}"),
        ("C. service, local files (photos/s)", lambda f: f"{f.service_local:.1f}"),
        ("D. service, S3 (photos/s)", lambda f: f"{f.service_s3:.1f}"),
        ("   local MB/s", lambda f: f"{f.service_local * f.mb_per_photo:.1f}"),
        ("   S3 MB/s", lambda f: f"{f.service_s3 * f.mb_per_photo:.1f}"),
        ("B/A (target >= 0.85)", lambda f: f"{f.compute_ratio:.2f}"),
        ("C/B (target >= 0.9)", lambda f: f"{f.local_ratio:.2f}"),
        ("D/B (target >= 0.8)", lambda f: f"{f.s3_ratio:.2f}"),
        (
            f"worker peak RSS MB (budget {report.memory_budget_mb})",
            lambda f: f"{f.worker_peak_rss_mb:.0f}",
        ),
    ]
    width = max(len(label) for label, _ in rows) + 2
    columns = [max(14, len(f.name) + 2) for f in report.formats]
    lines = [
        " " * width
        + "".join(f.name.rjust(column) for f, column in zip(report.formats, columns, strict=True))
    ]
    for label, cell in rows:
        lines.append(
            label.ljust(width)
            + "".join(
                cell(f).rjust(column) for f, column in zip(report.formats, columns, strict=True)
            )
        )
    return lines


def run_phone_bench(
    base: Settings,
    folder: Path,
    *,
    photos: int = 32,
    copies: int = 4,
    repeat: int = 3,
    cache: Path | None = None,
    size: tuple[int, int] = PHONE_SIZE,
    say: Callable[[str], None] = print,
) -> PhoneBenchReport:
    """The table above for the first ``photos`` photos of ``folder``: small and phone JPEGs
    each under ``copies`` names, the HEICs once (a 12 MP HEIC costs about a second to decode)."""
    phone = make_phone_set(
        folder, cache or base.data_dir / "bench-phone", photos, size=size, say=say
    )
    sources = phone.sources
    sets: list[tuple[str, list[tuple[str, bytes]]]] = [
        (
            "small JPEG",
            [(f"small/c{c}/{p.name}", p.read_bytes()) for c in range(copies) for p in sources],
        ),
        (
            "phone JPEG",
            [(f"phone/c{c}/{p.name}", p.read_bytes()) for c in range(copies) for p in phone.jpegs],
        ),
        ("phone HEIC", [(f"heic/{p.name}", p.read_bytes()) for p in phone.heics]),
    ]
    cores = os.cpu_count() or 1
    with private_services(base, "tagger-bench-phone-") as (services, workdir, servers):
        settings = services.model_copy(
            update={"fetch": services.fetch.model_copy(update={"allow_local_paths": True})}
        )
        processes = settings.worker.concurrency or cores
        say(
            f"{photos} pictures from {folder}, median of {repeat} runs, {processes} worker "
            f"processes on {cores} cores, analysers {', '.join(enabled_names(settings))}"
        )
        run = _FormatRun(settings, workdir, servers, repeat)
        figures = [run.measure(name, items, say) for name, items in sets]
    report = PhoneBenchReport(
        photos=photos,
        repeat=repeat,
        cores=cores,
        worker_processes=processes,
        analyzers=enabled_names(settings),
        precision=settings.model.precision,
        memory_budget_mb=settings.worker.max_memory_mb,
        formats=figures,
    )
    for line in format_table(report):
        say(line)
    return report
