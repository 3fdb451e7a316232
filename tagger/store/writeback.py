"""Optional copies of results next to the photos: a JSON sidecar and S3 object tags.

The SQL store is the index; these serve systems that read S3 and nothing else. Both are off
unless switched on in Settings. Object tags are merged, not overwritten: S3 allows ten tags per
object and the photo's owner may already use some, so tagger keeps theirs and fills only the
free slots with its own ``tagger:`` tags.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from tagger.config import Settings
from tagger.schemas import PhotoRef, Status, TagResult

log = logging.getLogger(__name__)

S3_MAX_TAGS = 10
TAG_PREFIX = "tagger:"
_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


def sidecar_key(prefix: str, ref: PhotoRef) -> str:
    """``<prefix>/<bucket>/<key>.json`` for S3 photos, a digest of the reference otherwise."""
    if ref.kind == "s3":
        bucket, key = ref.bucket_key
        name = f"{bucket}/{key}"
    else:
        name = "refs/" + hashlib.sha256(ref.identity.encode()).hexdigest()
    return f"{prefix.strip('/')}/{name}.json".lstrip("/")


def merged_object_tags(
    existing: Sequence[dict[str, str]], result: TagResult
) -> list[dict[str, str]]:
    """The owner's tags kept, tagger's replaced, within S3's ten-tag limit."""
    kept = [tag for tag in existing if not tag["Key"].startswith(TAG_PREFIX)]
    free = max(0, S3_MAX_TAGS - len(kept))
    ours = [
        {"Key": TAG_PREFIX + _UNSAFE.sub("_", name)[:120], "Value": f"{score:.3f}"}
        for name, score in _ranked(result)[:free]
    ]
    return kept + ours


def _ranked(result: TagResult) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for tag in result.tags:
        scores[tag.name] = max(scores.get(tag.name, 0.0), tag.score)
        for parent in tag.parents:
            scores[parent] = max(scores.get(parent, 0.0), tag.score)
    return sorted(scores.items(), key=lambda item: -item[1])


class S3WriteBack:
    """Writes sidecars and object tags for tagged photos; errors are logged, not raised, since
    the result is already safe in the store."""

    def __init__(self, settings: Settings, s3_client: Any) -> None:
        self.settings = settings
        self.s3 = s3_client
        prefix = settings.s3.results_prefix
        self.sidecar_bucket: str | None = None
        self.sidecar_prefix = ""
        if prefix:
            parts = urlsplit(prefix)
            self.sidecar_bucket, self.sidecar_prefix = parts.netloc, parts.path.lstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings, fetcher: Any) -> S3WriteBack | None:
        if not settings.s3.results_prefix and not settings.s3.write_object_tags:
            return None
        return cls(settings, fetcher.s3_client)

    def write(self, results: Sequence[TagResult]) -> int:
        """Returns how many writes failed."""
        failures = 0
        for result in results:
            if result.status != Status.TAGGED:
                continue
            ref = PhotoRef.parse(result.ref)
            try:
                if self.sidecar_bucket:
                    self.s3.put_object(
                        Bucket=self.sidecar_bucket,
                        Key=sidecar_key(self.sidecar_prefix, ref),
                        Body=result.model_dump_json().encode(),
                        ContentType="application/json",
                    )
                if self.settings.s3.write_object_tags and ref.kind == "s3":
                    bucket, key = ref.bucket_key
                    existing = self.s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
                    self.s3.put_object_tagging(
                        Bucket=bucket,
                        Key=key,
                        Tagging={"TagSet": merged_object_tags(existing, result)},
                    )
            except (ClientError, BotoCoreError) as exc:
                failures += 1
                log.warning(
                    "write-back failed",
                    extra={"ref": ref.redacted, "error": type(exc).__name__},
                )
        return failures
