"""Object tags are merged with the owner's, within S3's ten-tag limit; sidecar keys are stable."""

from __future__ import annotations

from tagger.schemas import PhotoRef, Status, Tag, TagResult
from tagger.store.writeback import S3_MAX_TAGS, merged_object_tags, sidecar_key


def result(*tags: Tag) -> TagResult:
    return TagResult(ref="s3://b/k.jpg", status=Status.TAGGED, tags=list(tags))


def test_owner_tags_are_kept_and_ours_replaced() -> None:
    existing = [
        {"Key": "owner", "Value": "alice"},
        {"Key": "tagger:dog", "Value": "0.900"},
    ]
    merged = merged_object_tags(existing, result(Tag(name="cat", score=0.8, parents=["animal"])))
    assert merged == [
        {"Key": "owner", "Value": "alice"},
        {"Key": "tagger:cat", "Value": "0.800"},
        {"Key": "tagger:animal", "Value": "0.800"},
    ]


def test_never_more_than_ten_tags() -> None:
    existing = [{"Key": f"user{i}", "Value": "x"} for i in range(8)]
    many = [Tag(name=f"t{i}", score=1 - i / 100) for i in range(20)]
    merged = merged_object_tags(existing, result(*many))
    assert len(merged) == S3_MAX_TAGS
    assert [t["Key"] for t in merged[8:]] == ["tagger:t0", "tagger:t1"]


def test_sidecar_keys() -> None:
    assert sidecar_key("tags/", PhotoRef(uri="s3://photos/a/b.jpg")) == "tags/photos/a/b.jpg.json"
    url_key = sidecar_key("tags", PhotoRef(uri="https://example.com/x.jpg"))
    assert url_key.startswith("tags/refs/") and url_key.endswith(".json")
