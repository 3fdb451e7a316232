"""The registry and the Fetcher facade: one source per scheme, dispatch, and the guarantee that
only typed errors come out, whichever source fails."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

import tagger.schemas
from tagger.config import Settings
from tagger.errors import FetchFailed, RefusedReference
from tagger.schemas import REF_SCHEMES, PhotoRef
from tagger.sources import SOURCES, Fetched, Fetcher, registry
from tagger.sources.http import HttpSource
from tests.unit.sources.conftest import make_settings

SECRET = "SIGNATURE-SECRET-123"


def test_every_scheme_a_reference_may_have_has_exactly_one_source() -> None:
    assert set(SOURCES) == set(REF_SCHEMES)


def test_public_names_others_import_are_still_there() -> None:
    from tagger.sources import (  # noqa: F401
        Fetched,
        Fetcher,
        clean_etag,
        is_public_address,
        make_s3_client,
        redact_url,
    )


class _Bucket:
    """A source for a scheme tagger does not have, as a new module would add it."""

    def __init__(self, settings: Settings) -> None:
        self.closed = 0

    def fetch(self, ref: PhotoRef) -> Fetched:
        return Fetched(ref=ref.uri, data=b"bytes of " + ref.bucket_key[1].encode(), etag="e")

    def head(self, ref: PhotoRef) -> str | None:
        return "e"

    def close(self) -> None:
        self.closed += 1


def test_a_new_scheme_is_one_source_and_one_line_in_each_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        tagger.schemas, "REF_SCHEMES", MappingProxyType({**REF_SCHEMES, "gs": "bucket"})
    )
    monkeypatch.setattr(registry, "SOURCES", MappingProxyType({**SOURCES, "gs": _Bucket}))
    ref = PhotoRef(uri="gs://photos/a/b.jpg")
    assert (ref.kind, ref.bucket_key, ref.identity) == ("gs", ("photos", "a/b.jpg"), ref.uri)
    with Fetcher(make_settings(tmp_path)) as fetcher:
        assert fetcher.fetch(ref).data == b"bytes of a/b.jpg"
        assert fetcher.head(ref) == "e"


def test_a_scheme_without_a_source_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        tagger.schemas, "REF_SCHEMES", MappingProxyType({**REF_SCHEMES, "gs": "bucket"})
    )
    with pytest.raises(RefusedReference, match="no source reads 'gs'") as caught:
        Fetcher(make_settings(tmp_path)).fetch(PhotoRef(uri="gs://photos/a.jpg"))
    assert caught.value.permanent


def test_an_unexpected_failure_is_transient_and_names_the_url_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: HttpSource, ref: PhotoRef) -> Fetched:
        raise KeyError(SECRET)

    monkeypatch.setattr(HttpSource, "fetch", explode)
    monkeypatch.setattr(HttpSource, "head", explode)
    ref = PhotoRef(uri=f"https://example.com/a.jpg?X-Amz-Signature={SECRET}")
    fetcher = Fetcher(make_settings(tmp_path))
    for call in (fetcher.fetch, fetcher.head):
        with pytest.raises(FetchFailed, match="unexpected KeyError") as caught:
            call(ref)
        assert SECRET not in caught.value.reason
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_one_source_per_class_made_on_first_use_and_again_after_close(tmp_path: Path) -> None:
    fetcher = Fetcher(make_settings(tmp_path))
    http = fetcher._source("http")
    assert fetcher._source("https") is http
    client = fetcher.s3_client
    assert fetcher.s3_client is client
    fetcher.close()
    assert fetcher._source("https") is not http
    assert fetcher.s3_client is not client
    fetcher.close()


def test_allow_local_paths_overrides_without_touching_the_settings(
    tmp_path: Path, photo: bytes
) -> None:
    settings = make_settings(tmp_path)
    path = tmp_path / "a.jpg"
    path.write_bytes(photo)
    with Fetcher(settings, allow_local_paths=True) as fetcher:
        assert fetcher.fetch(PhotoRef(uri=str(path))).data == photo
    assert settings.fetch.allow_local_paths is False
