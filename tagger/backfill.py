"""Scan a bucket prefix and submit the photos the store does not hold yet.

A bucket may hold ten million photos, so the backfill never builds a list of them: it walks
the S3 listing page by page, asks the store about a whole page in one query, submits what is
left in chunks, and pauses while the broker queue is above a bound, so Redis holds at most a
few chunks of work however large the bucket.

Resuming. S3 lists keys in lexicographic order, so one key is a position: after every chunk the
last submitted key is saved as a cursor in the store and a run killed half-way lists again with
``StartAfter`` from there. A completed run clears the cursor; the next night lists from the
start and the idempotence check (same ETag, same model version) skips what is done. A kill in
the few milliseconds between sending a chunk and saving the cursor sends that one chunk again;
the tagging task is idempotent, so a worker skips those photos.

Only one backfill of a prefix runs at a time: a Redis lock on the broker's server, renewed by
a background thread while the run is alive, so a crashed run frees its prefix after
``lock_timeout`` seconds and a slow night never overlaps the next one.

This module depends on the :class:`~tagger.submitting.Submitter` protocol rather than on the
client, so the layer rules (client and backfill are independent) hold and tests can count
submissions directly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self

import redis
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from tagger.analyzers.registry import installed_versions
from tagger.config import Settings
from tagger.errors import transient_codes
from tagger.formats import is_image_name
from tagger.schemas import PhotoRef, Status, combined_version
from tagger.sources import clean_etag, make_s3_client
from tagger.store import PhotoState, TagStore
from tagger.submitting import Submitter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

Verdict = Literal["new", "changed", "current", "outdated", "failed", "transient"]
"""What the store says about a listed photo; :func:`should_submit` turns it into a decision."""


class BackfillError(Exception):
    """A backfill could not start or had to stop; the message is fit to show a user."""


class LockHeld(BackfillError):
    def __init__(self, target: Target) -> None:
        super().__init__(f"another backfill holds the lock for {target.uri}")
        self.target = target


class LockLost(BackfillError):
    """The lock expired under a running backfill (Redis unreachable for ``lock_timeout``), so
    another run may have started; this one stops at its last saved position."""


class ListingFailed(BackfillError):
    """S3 refused or failed the listing (no such bucket, access denied, outage)."""


class Target(BaseModel):
    """A bucket and key prefix, written ``s3://bucket/prefix``."""

    model_config = ConfigDict(frozen=True)

    bucket: str = Field(min_length=1)
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> Target:
        """Split by hand rather than with urlsplit: ``?`` and ``#`` are ordinary key
        characters in S3 and must stay part of the prefix."""
        text = uri.strip()
        if not text.lower().startswith("s3://"):
            raise ValueError(f"backfill target must be s3://bucket/prefix, not {uri!r}")
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise ValueError(f"backfill target has no bucket: {uri!r}")
        return cls(bucket=bucket, prefix=prefix)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def cursor_name(self) -> str:
        return f"backfill:{self.bucket}/{self.prefix}"

    @property
    def lock_name(self) -> str:
        return f"tagger:backfill-lock:{self.bucket}/{self.prefix}"

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class BackfillOptions(BaseModel):
    """What a run submits besides new and changed photos, and how far it goes."""

    retag_outdated: bool = Field(
        default=False,
        description="also submit photos whose analysers (some or all) are at another version",
    )
    retry_failed: bool = Field(
        default=False, description="also submit photos whose earlier failure was permanent"
    )
    dry_run: bool = Field(default=False, description="list and check only: no submit, no cursor")
    limit: int | None = Field(default=None, ge=1, description="submit at most this many photos")
    restart: bool = Field(default=False, description="ignore the saved position")


class BackfillSummary(BaseModel):
    """Counts of one run; also what ``--json`` prints and the Celery task returns."""

    target: str
    model_version: str = Field(description="combined version of the enabled analysers")
    dry_run: bool = False
    resumed_after: str | None = Field(default=None, description="cursor the run started from")
    completed: bool = Field(default=False, description="reached the end of the listing")
    pages: int = 0
    listed: int = Field(default=0, description="photos (image keys) listed and checked")
    other_objects: int = Field(default=0, description="keys without an image extension")
    invalid: int = Field(default=0, description="keys that make no valid photo reference")
    new: int = 0
    changed: int = Field(default=0, description="tagged or failed before with another ETag")
    current: int = Field(default=0, description="already tagged: same ETag, current model")
    outdated: int = Field(default=0, description="same ETag, tagged by an older model")
    failed: int = Field(default=0, description="failed permanently before, same content")
    transient: int = Field(default=0, description="failed for a transient reason; retried")
    submitted: int = Field(default=0, description="photos sent (would be sent, in a dry run)")
    skipped: int = 0
    jobs: int = 0
    max_queue_depth_seen: int = 0
    waited_seconds: float = Field(default=0.0, description="time paused for the queue to drain")
    seconds: float = 0.0
    rate: float = Field(default=0.0, description="photos listed and checked per second")


class LeaseCheck(Protocol):
    def check(self) -> None:
        """Raise :class:`LockLost` if the run no longer holds its lock."""
        ...


ProgressHook = Callable[[BackfillSummary, str], None]
"""Called with the running summary and a phase: ``listing``, ``waiting`` or ``done``."""


# -- decisions ----------------------------------------------------------------------------


def verdict(
    state: PhotoState | None,
    etag: str | None,
    versions: Mapping[str, str],
    error: str | None = None,
    transient: frozenset[str] = frozenset(),
) -> Verdict:
    """Classify a listed photo against what the store knows about it.

    A failure is tied to the content that failed: when the store has the failed photo's ETag
    and the listing shows another, the photo was replaced and counts as changed. Workers do
    not record an ETag for every failure (a 404 has none), so a failure without one is taken
    to concern the current object.
    """
    if state is None or state.status not in (Status.TAGGED, Status.FAILED):
        return "new"
    if state.status is Status.TAGGED:
        if state.is_tagged_by(etag, versions):
            return "current"
        if etag is not None and state.etag == etag:
            return "outdated"
        return "changed"
    if state.etag is not None and etag is not None and state.etag != etag:
        return "changed"
    return "transient" if error in transient else "failed"


def should_submit(found: Verdict, options: BackfillOptions) -> bool:
    if found == "current":
        return False
    if found == "outdated":
        return options.retag_outdated
    if found == "failed":
        return options.retry_failed
    return True


# -- helpers that touch the outside world -------------------------------------------------


def current_versions(settings: Settings) -> dict[str, str]:
    """Name -> version of each enabled analyser as installed, read from the verified
    manifests; no model session is made, so listing stays cheap on a host that only submits."""
    return installed_versions(settings)


def listing_client(settings: Settings) -> S3Client:
    """The workers' S3 client configuration, so a backfill lists the buckets they read."""
    return make_s3_client(settings)


class Lease:
    """A non-blocking Redis lock, renewed from a daemon thread every third of its timeout.

    The token is not thread-local, so the renewing thread may extend the lock the main thread
    took. A failed renewal is retried until the lock would have expired; only then (or when
    Redis says another owner has it) is the lease lost.
    """

    def __init__(self, client: redis.Redis, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._lock = client.lock(name, timeout=timeout, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._thread = threading.Thread(target=self._renew, name="backfill-lease", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.timeout / 3):
            try:
                self._lock.reacquire()
                last_ok = time.monotonic()
            except LockNotOwnedError:
                self._lost.set()
                return
            except (LockError, RedisError) as exc:
                log.warning(
                    "renewing backfill lock failed",
                    extra={"lock": self.name, "error": type(exc).__name__},
                )
                if time.monotonic() - last_ok >= self.timeout:
                    self._lost.set()
                    return

    def check(self) -> None:
        if self._lost.is_set():
            raise LockLost(f"lost the backfill lock {self.name}; stopping at the saved position")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._lock.release()
        except (LockError, RedisError) as exc:  # expired or unreachable: nothing left to free
            log.warning(
                "releasing backfill lock failed",
                extra={"lock": self.name, "error": type(exc).__name__},
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def hold_lock(settings: Settings, target: Target) -> Iterator[Lease]:
    """The prefix's lock on the broker's Redis, or :class:`LockHeld` at once."""
    url = settings.worker.broker_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise BackfillError(f"the backfill lock needs a Redis broker, not {url.split(':')[0]}")
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        lease = Lease(client, target.lock_name, settings.backfill.lock_timeout)
        try:
            acquired = lease.acquire()
        except RedisError as exc:
            raise BackfillError(f"cannot take the backfill lock: Redis {exc}") from exc
        if not acquired:
            raise LockHeld(target)
        with lease:
            yield lease
    finally:
        client.close()


# -- the run ------------------------------------------------------------------------------


@dataclass
class _Listed:
    key: str
    ref: str
    etag: str | None


class Backfill:
    """One run over one target. Build it with everything it talks to, then call :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        s3: S3Client,
        store: TagStore,
        submitter: Submitter | None,
        versions: Mapping[str, str],
        options: BackfillOptions | None = None,
        *,
        lease: LeaseCheck | None = None,
        on_progress: ProgressHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.store = store
        self.submitter = submitter
        self.versions = dict(versions)
        self.model_version = combined_version(self.versions)
        self.options = options or BackfillOptions()
        self.lease = lease
        self.on_progress = on_progress
        self.sleep = sleep
        self._transient: frozenset[str] = transient_codes()
        if submitter is None and not self.options.dry_run:
            raise ValueError("a backfill that submits needs a submitter")

    def run(self, target: Target) -> BackfillSummary:
        options = self.options
        started = time.monotonic()
        resume = None if options.restart else self.store.get_cursor(target.cursor_name)
        summary = BackfillSummary(
            target=target.uri,
            model_version=self.model_version,
            dry_run=options.dry_run,
            resumed_after=resume,
        )
        self._summary, self._started = summary, started
        if resume is not None:
            log.info("backfill resuming", extra={"target": target.uri, "after": resume})
        stopped = False
        for contents in self._pages(target, resume):
            summary.pages += 1
            stopped = self._page(target, contents)
            if stopped:
                break
            self._save_cursor(target, str(contents[-1]["Key"]))
            self._progress("listing")
        summary.completed = not stopped
        if summary.completed and not options.dry_run:
            self.store.set_cursor(target.cursor_name, None)
        self._progress("done")
        return summary

    # -- listing ---------------------------------------------------------------------------

    def _pages(self, target: Target, after: str | None) -> Iterator[list[Mapping[str, object]]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        kwargs: dict[str, object] = {
            "Bucket": target.bucket,
            "Prefix": target.prefix,
            "PaginationConfig": {"PageSize": self.settings.backfill.page_size},
        }
        if after:
            kwargs["StartAfter"] = after
        try:
            for page in paginator.paginate(**kwargs):  # type: ignore[arg-type]
                contents = page.get("Contents", [])
                if contents:
                    yield contents  # type: ignore[misc]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise ListingFailed(
                f"listing {target.uri} failed: S3 {error.get('Code', 'error')} (HTTP {status})"
            ) from exc
        except BotoCoreError as exc:
            raise ListingFailed(f"listing {target.uri} failed: {type(exc).__name__}") from exc

    def _page(self, target: Target, contents: Sequence[Mapping[str, object]]) -> bool:
        """Decide and submit one page; True when the run must stop here (``--limit``)."""
        summary, options = self._summary, self.options
        listed: list[_Listed] = []
        for obj in contents:
            key = str(obj["Key"])
            if not is_image_name(key):
                summary.other_objects += 1
                continue
            try:
                ref = PhotoRef.parse(target.ref(key)).uri
            except ValueError:
                summary.invalid += 1
                log.warning("key makes no valid photo reference", extra={"key": key})
                continue
            etag = obj.get("ETag")
            listed.append(_Listed(key, ref, clean_etag(etag if isinstance(etag, str) else None)))
        known = self.store.known([item.ref for item in listed]) if listed else {}
        errors = self._failure_codes(known)
        chunk: list[_Listed] = []
        for item in listed:
            state = known.get(item.ref)
            found = verdict(state, item.etag, self.versions, errors.get(item.ref), self._transient)
            summary.listed += 1
            setattr(summary, found, getattr(summary, found) + 1)
            if not should_submit(found, options):
                summary.skipped += 1
                continue
            chunk.append(item)
            room = None if options.limit is None else options.limit - summary.submitted
            if len(chunk) >= self.settings.backfill.chunk_size or len(chunk) == room:
                self._submit(target, chunk)
                chunk = []
                if options.limit is not None and summary.submitted >= options.limit:
                    return True
        if chunk:
            self._submit(target, chunk)
        return False

    def _failure_codes(self, known: Mapping[str, PhotoState]) -> dict[str, str | None]:
        """Error codes of the page's failed photos (usually none, so usually no query):
        whether a failure was transient decides if it is retried."""
        if self.options.retry_failed:
            return {}
        failed = [ref for ref, state in known.items() if state.status is Status.FAILED]
        if not failed:
            return {}
        return {ref: result.error for ref, result in self.store.get_many(failed).items()}

    # -- submitting ------------------------------------------------------------------------

    def _submit(self, target: Target, chunk: Sequence[_Listed]) -> None:
        summary = self._summary
        if not self.options.dry_run:
            assert self.submitter is not None
            self._wait_for_room(math.ceil(len(chunk) / self.settings.worker.batch_size))
            self._check_lease()
            self.submitter.submit([item.ref for item in chunk])
            summary.jobs += 1
        summary.submitted += len(chunk)
        self._save_cursor(target, chunk[-1].key)
        self._progress("listing")

    def _wait_for_room(self, messages: int) -> None:
        """Pause until the chunk's tasks fit under the bound. A chunk larger than the bound
        waits for an empty queue, so the queue never holds more than one such chunk."""
        assert self.submitter is not None
        settings, summary = self.settings.backfill, self._summary
        threshold = max(0, settings.max_queue_depth - messages)
        waited_since: float | None = None
        while True:
            depth = self.submitter.queue_depth()
            summary.max_queue_depth_seen = max(summary.max_queue_depth_seen, depth)
            if depth <= threshold:
                break
            self._check_lease()
            if waited_since is None:
                waited_since = time.monotonic()
            self._progress("waiting")
            self.sleep(settings.poll_interval)
        if waited_since is not None:
            summary.waited_seconds += time.monotonic() - waited_since

    def _save_cursor(self, target: Target, key: str) -> None:
        if not self.options.dry_run:
            self.store.set_cursor(target.cursor_name, key)

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _progress(self, phase: str) -> None:
        summary = self._summary
        summary.seconds = time.monotonic() - self._started
        summary.rate = summary.listed / summary.seconds if summary.seconds > 0 else 0.0
        if self.on_progress is not None:
            self.on_progress(summary, phase)


def run_backfill(
    settings: Settings,
    target: Target,
    store: TagStore,
    submitter: Submitter | None,
    options: BackfillOptions | None = None,
    *,
    versions: Mapping[str, str] | None = None,
    lease: LeaseCheck | None = None,
    on_progress: ProgressHook | None = None,
) -> BackfillSummary:
    """One run with a fresh S3 client; the caller holds the lock (see :func:`hold_lock`)."""
    compared = dict(versions) if versions is not None else current_versions(settings)
    s3 = listing_client(settings)
    try:
        backfill = Backfill(
            settings, s3, store, submitter, compared, options, lease=lease, on_progress=on_progress
        )
        summary = backfill.run(target)
    finally:
        s3.close()
    log.info("backfill finished", extra=summary.model_dump(mode="json"))
    return summary
