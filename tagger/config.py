"""The one place tagger reads configuration from.

Every setting has an environment variable ``TAGGER_<NAME>``; nested groups use ``__``
(``TAGGER_S3__ENDPOINT_URL``). Nothing else in the code base reads ``os.environ``, so a
deployment is fully described by its environment and a test by the Settings it builds.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tagger.formats import IMAGE_SUFFIXES


def _user_dir(kind: Literal["cache", "data"]) -> Path:
    """XDG locations, so a laptop install keeps its model and database out of the project tree."""
    env = "XDG_CACHE_HOME" if kind == "cache" else "XDG_DATA_HOME"
    fallback = Path.home() / (".cache" if kind == "cache" else ".local/share")
    base = os.environ.get(env)
    return (Path(base) if base else fallback) / "tagger"


class ModelSettings(BaseModel):
    """Which network tags the photos and how it runs."""

    arch: Literal["lite0", "lite2"] = "lite0"
    intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime threads per process; 0 lets it use every core"
    )
    build_if_missing: bool = Field(
        default=True, description="build the ONNX artifact from the packaged weights on first use"
    )
    precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="the classifier the classify analyser runs: fp32, or int8 (static QDQ, "
        "per-channel, quantised from the fp32 one by `tagger model build --int8`; about 1.7x "
        "faster, top-1 within a point); its version differs, so results record which ran",
    )
    int8_reduce_range: bool | None = Field(
        default=None,
        description="int8 weights in 7 bits; None decides from the CPU: on without VNNI "
        "(avx512_vnni / avx_vnni in /proc/cpuinfo), off with it",
    )


class ImageSettings(BaseModel):
    """Limits that keep one hostile or oversized upload from taking a worker down."""

    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pixels: int = Field(
        default=100_000_000, gt=0, description="decompression-bomb bound on width*height"
    )
    max_decoded_bytes: int = Field(
        default=320 * 1024 * 1024,
        gt=0,
        description="bound on one photo's decoded size: width x height x the bytes per pixel "
        "Pillow allocates for its mode (RGB takes 4, 16-bit grey 2), so a non-JPEG RGB photo "
        "over 84 MP is refused while a JPEG is decoded reduced",
    )
    decode_budget_bytes: int = Field(
        default=640 * 1024 * 1024,
        gt=0,
        description="decoded bytes all I/O threads of one process may hold at once; a big "
        "decode waits for room, so 8 threads never decode 8 huge photos together",
    )


class TagSettings(BaseModel):
    """How probabilities become tags."""

    threshold: float = Field(default=0.1, ge=0.0, le=1.0)
    top_classes: int = Field(default=5, ge=1, le=1000)


class FetchSettings(BaseModel):
    """Network and file-system rules for reading photos from their references."""

    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=20.0, gt=0)
    total_timeout: float = Field(
        default=120.0,
        gt=0,
        description="seconds for a whole download, so a trickling server cannot hold a worker",
    )
    max_redirects: int = Field(default=3, ge=0)
    allow_http: bool = False
    allow_private_addresses: bool = Field(
        default=False,
        description="allow URLs resolving to loopback/private/link-local (tests, on-prem)",
    )
    allow_local_paths: bool = Field(
        default=False, description="let workers read file paths; the local command always may"
    )
    io_threads: int = Field(default=8, ge=1, description="concurrent downloads per process")


class S3Settings(BaseModel):
    """boto3 client options; credentials come from boto3's default chain."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    max_attempts: int = Field(default=3, ge=1)
    results_prefix: str | None = Field(
        default=None, description="s3://bucket/prefix for one JSON sidecar per photo"
    )
    write_object_tags: bool = Field(default=False, description="tag the photo object itself")


class StoreSettings(BaseModel):
    """Where results live; SQLite by default, PostgreSQL by URL."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file")

    def resolved_url(self, data_dir: Path) -> str:
        return self.url or f"sqlite:///{data_dir / 'tags.db'}"


class WorkerSettings(BaseModel):
    """Celery wiring for the fleet deployment."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    queue: str = "tagger"
    concurrency: int = Field(default=0, ge=0, description="worker processes; 0 = number of cores")
    batch_size: int = Field(
        default=64,
        ge=1,
        description="photos per task; inferred in batches of Settings.batch_size, so the "
        "next batch downloads while one is inferred",
    )
    outage_patience: float = Field(
        default=1800.0,
        gt=0,
        description="seconds a photo keeps being retried through a transient outage (S3, "
        "URL host); past it the photo is 'failed' with transient=true, never left 'queued'",
    )
    retry_backoff_max: float = Field(
        default=60.0, gt=0, description="longest wait between two retries of a photo"
    )
    store_wait: float = Field(
        default=60.0,
        gt=0,
        description="seconds a task waits for an unreachable store before handing its batch "
        "back to the queue (it is taken up again; nothing is acked unsaved)",
    )
    task_time_limit: int = Field(
        default=1800,
        gt=0,
        description="hard limit on one task; a child past it is replaced and its batch "
        "handed back to the queue (reject_on_worker_lost)",
    )
    visibility_timeout: int = Field(
        default=30,
        ge=6,
        description="seconds an unacked task may go without a renewal before Redis hands it "
        "to another worker; a live worker renews what it holds every third of this, so "
        "only a dead worker's batches come back (after this plus unacked_restore_interval)",
    )
    max_memory_mb: int = Field(
        default=1536,
        gt=0,
        description="memory budget of one worker process; Celery replaces a child that "
        "ends a task above it (worker_max_memory_per_child), the last guard",
    )
    unacked_restore_interval: int = Field(
        default=5, gt=0, description="kombu: seconds between sweeps for unacked tasks"
    )
    unacked_restore_throttle: int = Field(
        default=1, gt=0, description="kombu: scan Redis on every Nth sweep"
    )


class BackfillSettings(BaseModel):
    """Scanning buckets for photos not tagged yet, paced so a huge bucket never floods Redis."""

    page_size: int = Field(default=1000, ge=1, le=1000, description="keys per S3 listing page")
    chunk_size: int = Field(default=500, ge=1, description="photos per submitted job")
    max_queue_depth: int = Field(
        default=200,
        ge=1,
        description="tasks (each of up to worker.batch_size photos) allowed to wait in the queue",
    )
    poll_interval: float = Field(default=2.0, gt=0, description="seconds between queue checks")
    lock_timeout: float = Field(
        default=300.0,
        gt=0,
        description="seconds a crashed backfill keeps its prefix locked; renewed while it runs",
    )
    schedule: str = Field(
        default="0 2 * * *",
        pattern=r"^\S+( \S+){4}$",
        description="crontab (minute hour day-of-month month day-of-week, UTC) for beat",
    )
    targets: list[str] = Field(
        default_factory=list, description="s3://bucket/prefix locations the nightly run scans"
    )
    queue: str | None = Field(
        default=None, description="queue of the nightly backfill task; None = worker.queue"
    )


def _image_suffixes() -> list[str]:
    return sorted(IMAGE_SUFFIXES)


class TriggerSettings(BaseModel):
    """Which bucket notifications become tagging work, and how the listeners pace themselves."""

    prefix: str = Field(default="", description="only keys starting with this (URL-decoded)")
    suffixes: list[str] = Field(
        default_factory=_image_suffixes,
        description="case-insensitive key endings that are photos; empty = every key",
    )
    buckets: list[str] = Field(default_factory=list, description="only these buckets; empty = any")
    sqs_endpoint_url: str | None = Field(default=None, description="SQS endpoint (ElasticMQ, moto)")
    sqs_wait_seconds: int = Field(
        default=20, ge=0, le=20, description="long poll; also the longest delay to honour SIGTERM"
    )
    sqs_visibility_timeout: int = Field(
        default=300, ge=2, le=43200, description="seconds a received message stays hidden"
    )
    sqs_max_messages: int = Field(default=10, ge=1, le=10, description="messages per receive")
    sns_endpoint_url: str | None = Field(default=None, description="SNS endpoint (moto)")
    confirm_subscriptions: bool = Field(
        default=True, description="confirm SNS subscriptions (through the SNS API, never a URL)"
    )
    topic_arns: list[str] = Field(
        default_factory=list, description="SNS topics whose subscriptions we confirm; empty = any"
    )
    http_host: str = Field(default="127.0.0.1", description="webhook listener bind address")
    http_port: int = Field(default=8080, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="413 beyond this")
    http_queue_size: int = Field(
        default=1000, ge=1, description="accepted notifications awaiting submission; 503 beyond"
    )


class MetricsSettings(BaseModel):
    """Prometheus ``/metrics`` of the long-running processes (:mod:`tagger.metrics`); the HTTP
    API serves its own on its port."""

    host: str = Field(
        default="127.0.0.1",
        description="bind address of the worker's and the listeners' /metrics; 0.0.0.0 in a "
        "container, so Prometheus can reach it",
    )
    port: int = Field(
        default=9808,
        ge=0,
        le=65535,
        description="a worker's /metrics, served by its main process for all its children; "
        "0 = off. A second worker on the same host finds it taken and runs without",
    )
    listener_port: int = Field(
        default=9809, ge=0, le=65535, description="a listener's /metrics (tagger listen); 0 = off"
    )
    multiproc_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "tagger-metrics",
        description="where a worker's processes keep their metric files (prometheus_client's "
        "multiprocess mode), in a subfolder per worker emptied when it starts",
    )


class ObjectSettings(BaseModel):
    """The ``objects`` analyser (COCO detector)."""

    # Two labelled sets, int8 detector (`tagger eval`, scripts/eval_people.py): on the shipped
    # check set every threshold from 0.3 to 0.65 gives `person` precision and recall 1.0; on 231
    # hand-labelled ImageNet dev photos (tagger/data/people_check_imagenet_dev.tsv) 0.5 gives
    # P 0.85 / R 0.88 and 0.6 gives P 0.88 / R 0.88 (it drops a retriever at 0.56; what stays
    # false is a doll's face, a lionfish and a purse, which the float model scores as high).
    # 0.6 also drops most false COCO things.
    score_threshold: float = Field(
        default=0.6, gt=0, lt=1, description="keep detections at least this confident"
    )
    max_batch: int = Field(default=8, ge=1, description="photos per detector run")


class ColourSettings(BaseModel):
    """The ``colours`` analyser."""

    # A colour covering at least a third of the subject is what a person would call its
    # colour; the subject can then carry at most three colour tags.
    tag_threshold: float = Field(
        default=0.3, gt=0, le=1, description="a colour tag when its subject share reaches this"
    )
    thumbnail_side: int = Field(default=64, ge=8, le=512, description="pixels on the long side")


class SafetySettings(BaseModel):
    """The ``safety`` analyser (open_nsfw)."""

    # Yahoo's "above 0.8 is highly probably NSFW"; on the 250 ImageNet dev photos the highest
    # score is 0.37, so no photo there is flagged (`tagger eval`).
    threshold: float = Field(
        default=0.8, gt=0, le=1, description="P(nsfw) at which a photo is tagged nsfw, flagged"
    )
    max_batch: int = Field(default=16, ge=1, description="photos per model run")

    @property
    def safe_below(self) -> float:
        """The highest score a safe search lets through: a photo *at* the threshold is
        flagged, so safe is strictly below it."""
        return math.nextafter(self.threshold, 0.0)


class ThumbnailSettings(BaseModel):
    """Small WebP previews the worker makes from the photo it already decoded, for the
    gallery: showing a grid must not fetch and decode every full-size original again."""

    enabled: bool = Field(
        default=True,
        description="make one per tagged photo, stored beside the results (the S3 results "
        "prefix, else the data folder)",
    )
    # 384 fills a gallery cell on a 2x screen. The decode is asked for enough pixels that the
    # long side reaches it (tagger.thumbnails.decode_side): for 4:3 and 3:2 photos that is
    # what the default analysers ask for anyway, so only near-square ones decode larger.
    side: int = Field(
        default=384,
        ge=64,
        le=1024,
        description="pixels on the long side (a smaller photo is never enlarged); bounded so "
        "the decode it forces stays cheap and a thumbnail stays small",
    )
    quality: int = Field(
        default=75, ge=1, le=100, description="WebP quality: 75 is ~10-20 KB at 384 px"
    )


DEFAULT_ANALYZERS = ("classify", "objects", "colours", "safety", "labels")
"""``labels`` runs only while a label set is active (``TAGGER_LABELSETS`` or ``tagger labels
activate``), so it costs nothing until someone trains one."""


def _comma_list(value: object) -> object:
    """``TAGGER_ANALYZERS=classify,colours`` (or ``TAGGER_LABELSETS``) as well as a JSON list
    or a Python list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


ApiScope = Literal["read", "submit"]


class ApiToken(BaseModel):
    """One bearer token of ``tagger serve`` and what it may do: ``read`` (photos, search,
    jobs, the gallery) and ``submit`` (enqueue photos)."""

    name: str = Field(min_length=1, description="who holds it; logged, never the token")
    token: SecretStr
    scopes: list[ApiScope] = Field(default_factory=lambda: list[ApiScope](["read"]), min_length=1)

    @model_validator(mode="after")
    def _long_enough(self) -> ApiToken:
        if len(self.token.get_secret_value()) < 16:
            raise ValueError(f"API token {self.name!r} is shorter than 16 characters")
        return self


class ApiSettings(BaseModel):
    """``tagger serve``: the HTTP API and the gallery."""

    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8000, ge=0, le=65535)
    tokens: list[ApiToken] = Field(
        default_factory=list,
        description='TAGGER_API__TOKENS=[{"name": "search", "token": "...", "scopes": '
        '["read"]}]; with none, only a loopback bind is allowed and every request may read '
        "and submit (a laptop's own gallery)",
    )
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="413 beyond this")
    max_refs: int = Field(default=10_000, ge=1, description="photos one POST /v1/jobs may submit")
    max_page: int = Field(default=200, ge=1, description="largest page any listing returns")
    max_depth: int = Field(
        default=2000,
        ge=1,
        description="ranked results (search, similar) a client may page through",
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes")
    facets_ttl: float = Field(
        default=30.0, ge=0, description="seconds a process reuses its facet counts; 0 = never"
    )


class TrainSettings(BaseModel):
    """How ``tagger train`` turns labelled photos into a label set."""

    validation_split: float = Field(
        default=0.2,
        gt=0,
        lt=0.5,
        description="share of each label held out for early stopping "
        "and for calibrating thresholds",
    )
    seed: int = Field(default=0, description="the same data and seed give the same label set")
    min_photos: int = Field(default=5, ge=2, description="fewest photos a label may have")
    precision_target: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="each label's threshold is the lowest score at "
        "which it reaches this precision on the validation split",
    )
    max_epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=15, ge=1, description="epochs without a better validation loss")
    fine_tune_min_photos: int = Field(
        default=100,
        ge=1,
        description="fewest photos per label --fine-tune accepts; below it "
        "the frozen head does as well",
    )


class Settings(BaseSettings):
    """All of tagger's configuration; build one and pass it down, never read the env again."""

    model_config = SettingsConfigDict(
        env_prefix="TAGGER_", env_nested_delimiter="__", extra="ignore", protected_namespaces=()
    )

    data_dir: Path = Field(default_factory=lambda: _user_dir("data"))
    model_dir: Path = Field(
        default_factory=lambda: _user_dir("cache") / "models",
        description="built model artifacts, one folder per architecture (TAGGER_MODEL_DIR)",
    )
    batch_size: int = Field(default=32, ge=1, description="photos per inference batch")
    analyzers: Annotated[list[str], NoDecode, BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: list(DEFAULT_ANALYZERS),
        min_length=1,
        description="enabled analysers, e.g. TAGGER_ANALYZERS=classify,objects,colours,safety; "
        "names are checked against tagger.analyzers.registry when the pipeline starts",
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    tags: TagSettings = Field(default_factory=TagSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    objects: ObjectSettings = Field(default_factory=ObjectSettings)
    colours: ColourSettings = Field(default_factory=ColourSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    thumbnails: ThumbnailSettings = Field(default_factory=ThumbnailSettings)
    listener_token: SecretStr | None = None
    labelsets: Annotated[list[str] | None, NoDecode, BeforeValidator(_comma_list)] = Field(
        default=None,
        description="label sets to apply, TAGGER_LABELSETS=cars@<version>,shoes (a bare name "
        "is its newest local version); unset: those `tagger labels activate` chose; '' none",
    )
    labelsets_dir: Path | None = Field(
        default=None, description="where label sets live; default <model_dir>/labelsets"
    )
    labelsets_uri: str | None = Field(
        default=None,
        description="s3://bucket/prefix label sets are pushed to and pulled from, so every worker "
        "applies the same version",
    )
    feature_cache_dir: Path = Field(
        default_factory=lambda: _user_dir("cache") / "features",
        description="embeddings of training photos by backbone version and content hash, so a "
        "re-train does not recompute them",
    )
    train: TrainSettings = Field(default_factory=TrainSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _paths_absolute(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        self.model_dir = self.model_dir.expanduser()
        self.feature_cache_dir = self.feature_cache_dir.expanduser()
        return self

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        image = self.image
        if image.max_decoded_bytes > image.decode_budget_bytes:
            raise ValueError("image.max_decoded_bytes must not exceed image.decode_budget_bytes")
        return self

    @model_validator(mode="after")
    def _analyzers_unique(self) -> Settings:
        names = [name.strip().lower() for name in self.analyzers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"analyzers named twice: {', '.join(duplicates)}")
        self.analyzers = names
        return self

    @property
    def labelsets_root(self) -> Path:
        return (self.labelsets_dir or self.model_dir / "labelsets").expanduser()

    @property
    def store_url(self) -> str:
        return self.store.resolved_url(self.data_dir)
