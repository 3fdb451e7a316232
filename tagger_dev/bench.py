"""``tagger bench``: the throughput of each layer of the service, measured in one run.

From the inside out — the model alone, the in-process compute path, the service over local
files, the service over S3 — and the naive one-task-per-photo Keras peer, so the cost of the
queue, batching and store (3/2) and the gain over the obvious design (4/5) are read off
figures taken on the same machine, in the same minute, on the same photos.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import psutil
import redis
from PIL import Image
from pydantic import BaseModel, Field

from tagger.analyzers.base import Analyzer
from tagger.analyzers.classify import ensure_classifier
from tagger.analyzers.registry import (
    ANALYZERS,
    create_analyzers,
    enabled_names,
    installed_versions,
)
from tagger.client import TaggerClient
from tagger.config import S3Settings, Settings, StoreSettings
from tagger.errors import TaggerError
from tagger.imaging import ImageDecoder, load_tensor
from tagger.localfiles import is_image_name
from tagger.model.runtime import ModelRuntime
from tagger.pipeline import Pipeline
from tagger.schemas import Findings, PhotoRef
from tagger.sources import Fetched, Fetcher
from tagger.store import SqlTagStore
from tagger_dev.devservers import CeleryWorker, MotoServer, RedisServer

BUCKET = "bench-photos"


class AnalyzerCost(BaseModel):
    """CPU time one analyser costs per photo, on one thread: ``prepare`` (its resize from the
    decoded photo, on an I/O thread) and ``analyse`` (its batched model run and decoding)."""

    version: str
    prepare_ms: float
    analyse_ms: float
    opt_in: bool = Field(default=False, description="not enabled: measured on 20 photos only")

    @property
    def total_ms(self) -> float:
        return self.prepare_ms + self.analyse_ms


class BenchReport(BaseModel):
    photos: int
    repeat: int
    batch_size: int
    worker_processes: int
    threads_per_process: int
    analyzers: list[str]
    precision: str = Field(description="the classifier's, fp32 or int8")
    analyzer_cost: dict[str, AnalyzerCost]
    model_limit: float
    compute_limit: float
    compute_limit_classify_only: float
    service_local: float
    service_local_classify_only: float | None
    service_s3: float
    naive_peer: float | None
    naive_photos: int
    ratio_service_to_compute: float
    ratio_s3_service_to_naive: float | None
    cpu_ms_per_photo: dict[str, float]


class MemoryFetcher(Fetcher):
    """Photos held in memory: the compute limit measures everything but the I/O."""

    def __init__(self, settings: Settings, photos: dict[str, bytes]) -> None:
        super().__init__(settings, allow_local_paths=True)
        self.photos = photos

    def fetch(self, ref: PhotoRef) -> Fetched:
        return Fetched(ref=ref.uri, data=self.photos[ref.uri], etag=None)

    def head(self, ref: PhotoRef) -> str | None:
        return None


@dataclass
class Bench:
    settings: Settings
    photos: list[tuple[str, bytes]]
    workdir: Path
    say: Callable[[str], None]
    naive_photos: int
    repeat: int = 3
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.photos)

    # 1 -------------------------------------------------------------------------------------
    def model_limit(self) -> float:
        """The classifier alone (fp32 or int8, as TAGGER_MODEL__PRECISION says), every core."""
        artifact = ensure_classifier(self.settings)
        spec = artifact.manifest.preprocess
        started = time.thread_time()
        tensors = [load_tensor(data, self.settings.image, spec)[0] for _, data in self.photos]
        self.cpu["decode+preprocess"] = (time.thread_time() - started) * 1000 / self.n
        runtime = ModelRuntime(artifact, intra_op_threads=os.cpu_count() or 1)
        size = self.settings.batch_size
        batches = [np.stack(tensors[i : i + size]) for i in range(0, self.n, size)]
        runtime.predict(batches[0])  # warm-up
        rates, cpus = [], []
        for _ in range(self.repeat):
            cpu, wall = time.process_time(), time.perf_counter()
            for batch in batches:
                runtime.predict(batch)
            rates.append(self.n / (time.perf_counter() - wall))
            cpus.append((time.process_time() - cpu) * 1000 / self.n)
        self.cpu["inference"] = statistics.median(cpus)
        return statistics.median(rates)

    # 2 -------------------------------------------------------------------------------------
    def analyzer_costs(self) -> dict[str, AnalyzerCost]:
        """Core-ms per photo of each enabled analyser, on one thread, from photos decoded once
        at the size that analyser needs (the decode itself is ``decode`` in cpu_ms_per_photo)."""
        settings = self.settings.model_copy(
            update={"model": self.settings.model.model_copy(update={"intra_op_threads": 1})}
        )
        decoder = ImageDecoder(settings.image)
        analyzers = create_analyzers(settings)
        side = max(analyzer.min_side for analyzer in analyzers)
        started = time.thread_time()
        images = [decoder.decode(data, side).image for _, data in self.photos]
        self.cpu["decode (largest analyser size)"] = (time.thread_time() - started) * 1000 / self.n
        costs: dict[str, AnalyzerCost] = {}
        context: list[dict[str, Findings]] = [{} for _ in images]
        for analyzer in analyzers:
            costs[analyzer.name] = self.analyzer_cost(
                analyzer, images, context, settings.batch_size
            )
        # Opt-in analysers that are installed: their cost on a few photos, so a user can see
        # what enabling one would do; they are not part of the service figures.
        for name, entry in ANALYZERS.items():
            if name in costs:
                continue
            try:
                extra = entry.create(settings)
            except (TaggerError, ImportError) as exc:
                self.say(f"   {name:10s} not measured: {exc}")
                continue
            few = [decoder.decode(data, extra.min_side).image for _, data in self.photos[:20]]
            cost = self.analyzer_cost(extra, few, [{} for _ in few], settings.batch_size)
            costs[name] = cost.model_copy(update={"opt_in": True})
        return costs

    @staticmethod
    def analyzer_cost(
        analyzer: Analyzer,
        images: list[Image.Image],
        context: list[dict[str, Findings]],
        size: int,
    ) -> AnalyzerCost:
        analyzer.warm_up()
        started = time.thread_time()
        prepared = [analyzer.prepare(image) for image in images]
        prepare_ms = (time.thread_time() - started) * 1000 / len(images)
        started = time.process_time()
        for begin in range(0, len(images), size):
            found = analyzer.analyse(prepared[begin : begin + size], context[begin : begin + size])
            for offset, findings in enumerate(found):
                context[begin + offset][analyzer.name] = findings
        analyse_ms = (time.process_time() - started) * 1000 / len(images)
        return AnalyzerCost(version=analyzer.version, prepare_ms=prepare_ms, analyse_ms=analyse_ms)

    def compute_limit(self, settings: Settings) -> float:
        """The in-process flow on photos in memory, one process using every core: the ceiling
        the service is compared with. It does the per-photo work a worker does (decode, every
        enabled analyser, results, and the WebP thumbnail when ``settings.thumbnails`` is on)
        but no I/O, queue or store."""
        photos = {str(PhotoRef.parse(f"s3://mem/{name}")): data for name, data in self.photos}
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"intra_op_threads": 0})}
        )
        fetcher = MemoryFetcher(settings, photos)
        with Pipeline(settings, create_analyzers(settings), fetcher) as pipeline:
            pipeline.tag_batch(list(photos)[: settings.batch_size])  # warm-up
            thumbnails = settings.thumbnails.enabled
            rates = []
            for _ in range(self.repeat):
                wall = time.perf_counter()
                count = sum(
                    len(batch)
                    for batch in pipeline.outcomes(
                        list(photos), batch_size=settings.batch_size, thumbnails=thumbnails
                    )
                )
                rates.append(count / (time.perf_counter() - wall))
        return statistics.median(rates)

    # 3 and 4 -------------------------------------------------------------------------------
    def service(
        self, settings: Settings, refs: list[str], label: str, *, force_first: bool = False
    ) -> float:
        """Median of ``repeat`` runs; runs after the first re-tag (``force``), since the
        workers would otherwise skip photos they already tagged (``force_first`` when another
        set of analysers already tagged these refs in this store)."""
        rates, cpus = [], []
        with TaggerClient(settings) as client:
            for attempt in range(self.repeat):
                cpu, wall = time.process_time(), time.perf_counter()
                job = client.submit(refs, force=force_first or attempt > 0)
                cpus.append((time.process_time() - cpu) * 1000 / len(refs))
                counts = job.wait(timeout=3600, poll=0.05)
                rates.append(len(refs) / (time.perf_counter() - wall))
                if counts.failed or counts.done != len(refs):
                    raise RuntimeError(f"{label}: not every photo was tagged: {counts}")
        self.cpu[f"queue (client submit, {label})"] = statistics.median(cpus)
        return statistics.median(rates)

    # 5 -------------------------------------------------------------------------------------
    def naive(self, settings: Settings, keys: list[str], log: Path) -> float:
        from tagger_dev.bench_naive import DONE_KEY, NAIVE_QUEUE_SUFFIX, NAIVE_TASK, create_app

        queue = settings.worker.queue + NAIVE_QUEUE_SUFFIX
        worker = CeleryWorker(
            settings,
            log,
            concurrency=os.cpu_count() or 1,
            app="tagger_dev.bench_naive",
            queue=queue,
            name="naive",
        ).start(timeout=600)
        counter = redis.Redis.from_url(settings.worker.broker_url)
        counter.delete(DONE_KEY)
        app = create_app(settings)
        try:
            wall = time.perf_counter()
            for key in keys:
                app.send_task(NAIVE_TASK, args=[BUCKET, key], queue=queue)
            while int(counter.get(DONE_KEY) or 0) < len(keys):
                time.sleep(0.05)
            wall = time.perf_counter() - wall
        finally:
            worker.stop()
            app.close()
        return len(keys) / wall

    # 6 -------------------------------------------------------------------------------------
    def s3_client_cpu(self, settings: Settings, keys: list[str]) -> None:
        fetcher = Fetcher(settings)
        fetcher.head(PhotoRef.parse(f"s3://{BUCKET}/{keys[0]}"))  # connect once
        cpu = time.process_time()
        for key in keys:
            fetcher.fetch(PhotoRef.parse(f"s3://{BUCKET}/{key}"))
        self.cpu["s3 client GET"] = (time.process_time() - cpu) * 1000 / len(keys)
        fetcher.close()

    def store_cpu(self, settings: Settings, refs: list[str]) -> None:
        source = SqlTagStore(settings.store_url)
        results = list(source.get_many(refs).values())
        source.close()
        target = SqlTagStore(f"sqlite:///{self.workdir / 'store-bench.db'}")
        size = settings.batch_size
        cpu = time.process_time()
        for start in range(0, len(results), size):
            target.save(results[start : start + size])
        self.cpu["store save (SQLite)"] = (time.process_time() - cpu) * 1000 / len(results)
        target.close()


def load_photos(folder: Path, copies: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
    if not files:
        raise ValueError(f"no photos in {folder}")
    return [(f"c{copy}/{path.name}", path.read_bytes()) for copy in range(copies) for path in files]


def _process_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for proc in [process, *process.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


@contextmanager
def private_services(base: Settings, prefix: str) -> Iterator[tuple[Settings, Path, list[Any]]]:
    """A private redis-server and moto S3 server on loopback, and Settings pointing at them
    (store: the configured one, else SQLite in a scratch folder). Everything it started is
    stopped, by PID, on the way out; the caller appends anything else it starts."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    servers: list[Any] = []
    try:
        redis_server = RedisServer(workdir)
        servers.append(redis_server)
        broker = redis_server.start()
        moto = MotoServer(workdir)
        servers.append(moto)
        endpoint = moto.start()
        # moto accepts any credentials; boto3 still wants some in its default chain
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        settings = base.model_copy(
            update={
                "data_dir": workdir,
                "store": StoreSettings(url=base.store.url or f"sqlite:///{workdir / 'tags.db'}"),
                "s3": S3Settings(
                    endpoint_url=endpoint, region="us-east-1", addressing_style="path"
                ),
                "worker": base.worker.model_copy(
                    update={"broker_url": f"{broker}/0", "queue": f"bench-{os.getpid()}"}
                ),
            }
        )
        yield settings, workdir, servers
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_bench(
    base: Settings,
    folder: Path,
    *,
    copies: int = 2,
    naive_photos: int | None = None,
    repeat: int = 3,
    say: Callable[[str], None] = print,
) -> BenchReport:
    photos = load_photos(folder, copies)
    cores = os.cpu_count() or 1
    processes = base.worker.concurrency or cores
    threads = base.model.intra_op_threads or max(1, cores // processes)
    with private_services(base, "tagger-bench-") as (services, workdir, servers):
        settings = services.model_copy(
            update={"fetch": services.fetch.model_copy(update={"allow_local_paths": True})}
        )
        endpoint = settings.s3.endpoint_url
        bench = Bench(
            settings,
            photos,
            workdir,
            say,
            len(photos) if naive_photos is None else naive_photos,
            repeat,
        )
        say(
            f"{len(photos)} photos, median of {repeat} runs, batch {settings.batch_size}, "
            f"{settings.worker.batch_size} per task, {processes} worker processes "
            f"x {threads} threads on {cores} cores"
        )

        model_rate = bench.model_limit()
        say(f"1. model limit (classify, {settings.model.precision})   {model_rate:8.1f} images/s")
        costs = bench.analyzer_costs()
        for name, cost in costs.items():
            say(
                f"   {name:10s} {cost.total_ms:8.2f} core-ms/photo "
                f"(prepare {cost.prepare_ms:5.2f}, analyse {cost.analyse_ms:8.2f})"
                + (
                    " opt-in, not enabled: 20 photos, not in the figures below"
                    if cost.opt_in
                    else ""
                )
            )
        classify_only = settings.model_copy(update={"analyzers": ["classify"]})
        compute_rate = bench.compute_limit(settings)
        say(f"2. compute limit ({', '.join(enabled_names(settings))}) {compute_rate:8.1f} images/s")
        classify_rate = bench.compute_limit(classify_only)
        say(f"2b. compute limit (classify only) {classify_rate:8.1f} images/s")

        files = workdir / "photos"
        for name, data in photos:
            (files / name).parent.mkdir(parents=True, exist_ok=True)
            (files / name).write_bytes(data)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda item: s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), photos
                )
            )
        keys = [name for name, _ in photos]

        local_refs = [str(files / name) for name, _ in photos]
        local_classify: float | None = None
        if enabled_names(settings) != ["classify"]:
            worker = CeleryWorker(
                classify_only, workdir / "worker-classify.log", concurrency=processes
            )
            servers.append(worker)
            worker.start(timeout=600)
            local_classify = bench.service(classify_only, local_refs, "local, classify only")
            worker.stop()
            say(f"3b. service, local, classify only {local_classify:8.1f} images/s")
        worker = CeleryWorker(settings, workdir / "worker.log", concurrency=processes)
        servers.append(worker)
        worker.start(timeout=600)
        assert worker.process is not None
        cpu_before = _process_cpu([worker.process.pid])
        local_rate = bench.service(settings, local_refs, "local", force_first=True)
        worker_cpu = _process_cpu([worker.process.pid]) - cpu_before
        bench.cpu["worker process total (local files)"] = worker_cpu * 1000 / (len(photos) * repeat)
        say(f"3. service, local files           {local_rate:8.1f} images/s")
        s3_refs = [f"s3://{BUCKET}/{key}" for key in keys]
        s3_rate = bench.service(settings, s3_refs, "s3")
        say(f"4. service, S3 (moto)             {s3_rate:8.1f} images/s")
        worker.stop()

        bench.s3_client_cpu(settings, keys)
        bench.store_cpu(settings, local_refs)
        naive_rate: float | None = None
        if bench.naive_photos > 0:
            naive_rate = bench.naive(settings, keys[: bench.naive_photos], workdir / "naive.log")
            say(
                f"5. naive Keras peer       {naive_rate:8.1f} images/s "
                f"({bench.naive_photos} photos)"
            )
        report = BenchReport(
            photos=len(photos),
            repeat=repeat,
            batch_size=settings.batch_size,
            worker_processes=processes,
            threads_per_process=threads,
            analyzers=enabled_names(settings),
            precision=settings.model.precision,
            analyzer_cost=costs,
            model_limit=model_rate,
            compute_limit=compute_rate,
            compute_limit_classify_only=classify_rate,
            service_local=local_rate,
            service_local_classify_only=local_classify,
            service_s3=s3_rate,
            naive_peer=naive_rate,
            naive_photos=bench.naive_photos,
            ratio_service_to_compute=local_rate / compute_rate,
            ratio_s3_service_to_naive=(s3_rate / naive_rate) if naive_rate else None,
            cpu_ms_per_photo={k: round(v, 3) for k, v in bench.cpu.items()},
        )
        say(
            f"6. ratio 3/2 = {report.ratio_service_to_compute:.2f}   ratio 4/5 = "
            + (
                f"{report.ratio_s3_service_to_naive:.1f}"
                if report.ratio_s3_service_to_naive
                else "n/a"
            )
        )
        for name, value in report.cpu_ms_per_photo.items():
            say(f"   cpu ms/photo  {name:40s} {value:7.2f}")
        return report


class BackfillBenchReport(BaseModel):
    objects: int
    already_tagged: int
    submitted: int
    seconds: float
    rate: float


def run_backfill_bench(
    base: Settings,
    *,
    objects: int = 5000,
    already_tagged: float = 0.3,
    say: Callable[[str], None] = print,
) -> BackfillBenchReport:
    """Listing + store check + submit rate of ``tagger backfill`` against a moto S3 server,
    a private Redis and the configured store (SQLite by default), with no worker draining the
    queue, so the figure is the backfill's own."""
    import io

    from PIL import Image

    from tagger.backfill import BackfillOptions, Target, run_backfill
    from tagger.schemas import AnalyzerRun, Status, TagResult, combined_version

    with private_services(base, "tagger-bench-backfill-") as (services, _, _):
        settings = services.model_copy(
            update={"backfill": services.backfill.model_copy(update={"max_queue_depth": 10**9})}
        )
        endpoint = settings.s3.endpoint_url
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, "JPEG")
        body = buffer.getvalue()
        keys = [f"photos/{i:07d}.jpg" for i in range(objects)]
        say(f"uploading {objects} objects to the moto server …")
        with ThreadPoolExecutor(16) as pool:
            etags = list(
                pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"], keys)
            )
        versions = installed_versions(settings)
        version = combined_version(versions)
        runs = {name: AnalyzerRun(version=v) for name, v in versions.items()}
        done = int(objects * already_tagged)
        with SqlTagStore(settings.store_url) as store:
            store.save(
                [
                    TagResult(
                        ref=f"s3://{BUCKET}/{key}",
                        status=Status.TAGGED,
                        etag=etag.strip('"'),
                        model_version=version,
                        analyzers=runs,
                    )
                    for key, etag in zip(keys[:done], etags[:done], strict=True)
                ]
            )
            with TaggerClient(settings) as client:
                summary = run_backfill(
                    settings,
                    Target.parse(f"s3://{BUCKET}/photos/"),
                    store,
                    client,
                    BackfillOptions(),
                    versions=versions,
                )
        report = BackfillBenchReport(
            objects=objects,
            already_tagged=done,
            submitted=summary.submitted,
            seconds=summary.seconds,
            rate=summary.rate,
        )
        say(
            f"backfill: {objects} listed, {done} already tagged, {summary.submitted} submitted "
            f"in {summary.seconds:.1f} s = {summary.rate:.0f} photos/s (list + check + submit)"
        )
        return report
