"""Label sets in S3, so every worker of a fleet applies the very same version.

``tagger labels push cars`` copies a version folder to ``<TAGGER_LABELSETS_URI>/cars/<version>/``;
a worker started with ``TAGGER_LABELSETS=cars@<version>`` that lacks it locally pulls it from
there into its model folder before its first photo. The manifest is uploaded last, and a pulled
folder is verified (checksum of ``model.onnx``) before it is moved into place, so a half
upload or a tampered file is refused rather than applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from tagger.errors import ConfigError, ModelError
from tagger.model.labelset import (
    LabelSet,
    LabelSetSpec,
    check_name,
    load_labelset,
    version_dir,
)
from tagger.model.registry import MANIFEST_FILE
from tagger.model.staging import staged

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class RemoteLabelSets:
    """Label set folders under one ``s3://bucket/prefix``."""

    def __init__(self, client: S3Client, uri: str) -> None:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise ConfigError(f"TAGGER_LABELSETS_URI must be s3://bucket[/prefix], not {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri.rstrip("/")

    def _key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def push(self, labelset: LabelSet) -> str:
        """Upload one version; the manifest goes last, so a reader never finds a manifest
        without its model. Returns where it went."""
        files = sorted(p for p in labelset.path.iterdir() if p.is_file())
        ordered = [p for p in files if p.name != MANIFEST_FILE] + [labelset.path / MANIFEST_FILE]
        try:
            for path in ordered:
                self.client.upload_file(
                    str(path), self.bucket, self._key(labelset.name, labelset.version, path.name)
                )
        except (BotoCoreError, ClientError) as exc:
            raise ModelError(f"could not push {labelset.spec} to {self.uri}: {exc}") from exc
        return f"{self.uri}/{labelset.name}/{labelset.version}/"

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` in the bucket that have a manifest (complete uploads)."""
        prefix = self._key(check_name(name)) + "/"
        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    rest = item["Key"][len(prefix) :]
                    version, _, file = rest.partition("/")
                    if file == MANIFEST_FILE:
                        found.append(version)
        except (BotoCoreError, ClientError) as exc:
            raise ModelError(f"could not list label sets in {self.uri}: {exc}") from exc
        return sorted(found)

    def pull(self, spec: LabelSetSpec, root: Path) -> LabelSet:
        """Download the version ``spec`` names (it must name one: a fleet pins versions) and
        verify it before it is moved into the model folder."""
        if spec.version is None:
            raise ConfigError(
                f"label set {spec.name!r} is not here; pin a version to pull it from "
                f"{self.uri} (TAGGER_LABELSETS={spec.name}@<version>)"
            )
        matches = [v for v in self.versions(spec.name) if v.startswith(spec.version)]
        if len(matches) != 1:
            what = "no" if not matches else f"{len(matches)}"
            raise ModelError(f"{what} label set {spec} in {self.uri}")
        version = matches[0]
        destination = version_dir(root, spec.name, version)
        prefix = self._key(spec.name, version) + "/"
        try:
            with staged(destination) as staging:
                listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
                for item in listing.get("Contents", []):
                    file = item["Key"][len(prefix) :]
                    if file and "/" not in file:
                        self.client.download_file(self.bucket, item["Key"], str(staging / file))
                load_labelset(staging)  # refuse a partial or modified copy before it lands
        except (BotoCoreError, ClientError) as exc:
            raise ModelError(f"could not pull {spec} from {self.uri}: {exc}") from exc
        return load_labelset(destination)
