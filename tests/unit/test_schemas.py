"""PhotoRef: which references are valid, how they are normalised, and the three names of one
reference (uri to fetch, identity to store, redacted to show)."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from pydantic import ValidationError

from tagger.schemas import PhotoRef

SECRET = "SIGNATURE-SECRET-123"


def refusal(uri: str) -> str:
    """The one-line reason a reference is refused with, checked to be a typed ValueError."""
    with pytest.raises(ValueError) as caught:
        PhotoRef(uri=uri)
    error = caught.value
    assert isinstance(error, ValidationError)
    assert [e["type"] for e in error.errors()] == ["invalid_ref"]
    reason = str(error).splitlines()[-1]
    assert reason.endswith("[type=invalid_ref]"), str(error)
    return reason


# -- valid references and their normal form -------------------------------------------------


def test_s3_and_urls_are_kept_as_given() -> None:
    for uri in ("s3://photos/a/b?c#d.jpg", "https://example.com/a.jpg?w=1", "http://h:8080/x"):
        assert PhotoRef(uri=f"  {uri} ").uri == uri
    assert PhotoRef(uri="s3://photos/a/b?c#d.jpg").bucket_key == ("photos", "a/b?c#d.jpg")


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("s3://b/k.jpg", "s3"),
        ("S3://b/k.jpg", "s3"),
        ("https://example.com/a.jpg", "https"),
        ("HTTP://example.com/a.jpg", "http"),
        ("/photos/a.jpg", "file"),
        ("file:///photos/a.jpg", "file"),
        ("IMG:001.jpg", "file"),
    ],
)
def test_kind_is_the_scheme_or_file(uri: str, kind: str) -> None:
    assert PhotoRef(uri=uri).kind == kind


def test_paths_become_absolute_with_symlinks_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path.resolve()
    (real / "a.jpg").write_bytes(b"x")
    (real / "link.jpg").symlink_to("a.jpg")
    monkeypatch.chdir(real)
    assert PhotoRef(uri="a.jpg").uri == str(real / "a.jpg")
    assert PhotoRef(uri="./sub/../link.jpg").uri == str(real / "a.jpg")
    assert PhotoRef(uri=f"file://{real}/link.jpg").uri == str(real / "a.jpg")
    assert PhotoRef(uri=f"file://localhost{real}/a.jpg").uri == str(real / "a.jpg")
    assert PhotoRef(uri="missing.jpg").uri == str(real / "missing.jpg")  # fails when read
    assert PhotoRef(uri="{odd}.jpg").uri == str(real / "{odd}.jpg")


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path.resolve()))
    assert PhotoRef(uri="~/a.jpg").uri == str(tmp_path.resolve() / "a.jpg")


# -- refusals: always a ValueError of type invalid_ref, one line, never a crash -------------


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b.jpg", "NUL"),
        ("ftp://x/y.jpg", "unsupported scheme 'ftp'"),
        ("s3://bucket-only", "bucket and a key"),
        ("s3:///key.jpg", "bucket and a key"),
        ("s3:bucket/key.jpg", "must start with s3://"),
        ("https:///a.jpg", "no host"),
        ("https://h:99999/a.jpg", "malformed URL"),
        ("https://[::1/a.jpg", "malformed URL"),
        ("https://h/a\n.jpg", "control characters"),
        ("file://photo.jpg", "names a host"),
        ("file://", "no path"),
    ],
)
def test_malformed_references_are_refused(uri: str, words: str) -> None:
    assert words in refusal(uri)


def test_symlink_loops_are_refused_as_invalid_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path.resolve raised RuntimeError here (Python 3.11), which crashed `tagger tag` and made
    workers retry an "internal error"; a loop is now an ordinary invalid reference."""
    monkeypatch.chdir(tmp_path)
    Path("self.jpg").symlink_to("self.jpg")
    Path("a.jpg").symlink_to("b.jpg")
    Path("b.jpg").symlink_to("a.jpg")
    Path("d").symlink_to("d")
    for uri in (
        "self.jpg",
        "a.jpg",
        str(tmp_path / "b.jpg"),
        "d/x.jpg",
        f"file://{tmp_path}/a.jpg",
    ):
        reason = refusal(uri)
        assert "symlink loop" in reason
        assert uri in reason


def test_a_deleted_working_directory_is_an_invalid_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    os.rmdir(gone)
    reason = refusal("a.jpg")
    assert "a.jpg" in reason


def test_refusals_never_quote_a_secret() -> None:
    for uri in (
        f"ftp://user:{SECRET}@x/y.jpg?sig={SECRET}",
        f"https://h:99999/a.jpg?X-Amz-Signature={SECRET}",
        f"https://user:{SECRET}@/a.jpg?token={SECRET}",
        f"https://h/a\n.jpg?token={SECRET}",
    ):
        with pytest.raises(ValueError) as caught:
            PhotoRef(uri=uri)
        assert SECRET not in str(caught.value)
        assert SECRET not in "".join(traceback.format_exception(caught.value))


# -- identity and redacted ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "identity"),
    [
        (
            "https://b.s3.amazonaws.com/a.jpg?w=640&X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=AKIA%2F20240101&X-Amz-Signature={SECRET}&X-Amz-Expires=900",
            "https://b.s3.amazonaws.com/a.jpg?w=640",
        ),
        (
            f"https://h/a.jpg?AWSAccessKeyId=AKIA&Signature={SECRET}&Expires=1700000000",
            "https://h/a.jpg",
        ),
        (
            "https://storage.googleapis.com/b/a.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            f"&x-goog-signature={SECRET}&GoogleAccessId=sa%40p",
            "https://storage.googleapis.com/b/a.jpg",
        ),
        (  # Azure SAS
            f"https://acct.blob.core.windows.net/c/a.jpg?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030"
            f"&st=2024&spr=https&sig={SECRET}&skoid=o&sktid=t&skt=1&ske=2&sks=b&skv=v&sr=b",
            "https://acct.blob.core.windows.net/c/a.jpg?ss=b&srt=o&spr=https",
        ),
        (  # CloudFront
            f"https://d.cloudfront.net/a.jpg?Policy=eyJ&Signature={SECRET}&Key-Pair-Id=K2",
            "https://d.cloudfront.net/a.jpg",
        ),
        (
            f"https://h/a.jpg?size=l&token={SECRET}&ACCESS_TOKEN=x&auth=y&key=k&credential=c",
            "https://h/a.jpg?size=l",
        ),
        (f"https://me:{SECRET}@h:8443/a.jpg?v=2#frag", "https://h:8443/a.jpg?v=2"),
        (f"https://h/a.jpg?X%2DAmz%2DSignature={SECRET}&b=1&&c", "https://h/a.jpg?b=1&c"),
        ("https://h/a.jpg?b=2&a=1", "https://h/a.jpg?b=2&a=1"),  # order kept, nothing sorted
        ("https://h/a.jpg", "https://h/a.jpg"),
    ],
)
def test_identity_drops_signatures_and_credentials_only(uri: str, identity: str) -> None:
    ref = PhotoRef(uri=uri)
    assert ref.identity == identity
    assert ref.uri == uri  # what is fetched keeps the signature
    assert SECRET not in ref.identity
    assert SECRET not in ref.redacted
    assert SECRET not in repr(ref)


def test_redacted_marks_what_was_removed() -> None:
    ref = PhotoRef(uri=f"https://me:{SECRET}@h/a.jpg?w=640&X-Amz-Signature={SECRET}")
    assert ref.identity == "https://h/a.jpg?w=640"
    assert ref.redacted == "https://<redacted>@h/a.jpg?w=640&<redacted>"
    assert repr(ref) == f"PhotoRef(uri={ref.redacted!r})"
    plain = PhotoRef(uri="https://h/a.jpg?w=640")
    assert plain.redacted == plain.identity == plain.uri


def test_identity_is_the_uri_for_buckets_and_files(tmp_path: Path) -> None:
    for uri in ("s3://b/a.jpg?X-Amz-Signature=part-of-the-key", str(tmp_path / "a.jpg")):
        ref = PhotoRef(uri=uri)
        assert ref.identity == ref.redacted == ref.uri == uri


def test_the_same_photo_under_two_signatures_has_one_identity() -> None:
    first = PhotoRef(uri="https://h/a.jpg?X-Amz-Signature=one&X-Amz-Date=1")
    second = PhotoRef(uri="https://h/a.jpg?X-Amz-Date=2&X-Amz-Signature=two")
    assert first.uri != second.uri
    assert first.identity == second.identity == "https://h/a.jpg"
