"""The /v1 routes answer with the library's models, page through everything exactly once,
and say what went wrong with a code from the one enum."""

from __future__ import annotations

import io
from collections.abc import Callable

from fastapi.testclient import TestClient
from PIL import Image

from tagger.schemas import JobCounts, TagResult
from tagger.store import SearchHit
from tagger.thumbnails import ThumbnailStoreError
from tests.unit.api.conftest import made_up


def all_pages(api: TestClient, path: str, **params: object) -> tuple[list[dict], int]:
    items: list[dict] = []
    cursor = None
    pages = 0
    while True:
        answer = api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return items, pages


def test_a_photo_comes_back_as_the_clients_tag_result(api: TestClient) -> None:
    answer = api.get("/v1/photos", params={"ref": "s3://p/dog.jpg"})
    assert answer.status_code == 200
    result = TagResult.model_validate(answer.json())
    assert result.ref == "s3://p/dog.jpg"
    assert "dog" in result.tag_names() and "animal" in result.tag_names()
    assert result.objects is not None and result.objects[0].box == (0.1, 0.2, 0.5, 0.9)
    assert "signature" not in answer.json()


def test_an_unknown_photo_is_404_with_the_not_found_code(api: TestClient) -> None:
    answer = api.get("/v1/photos", params={"ref": "s3://p/nope.jpg"})
    assert answer.status_code == 404
    assert answer.json() == {
        "code": "not_found",
        "message": "photo not tagged (yet)",
        "ref": "s3://p/nope.jpg",
    }


def test_recent_pages_cover_every_tagged_photo_once_newest_first(api: TestClient) -> None:
    items, pages = all_pages(api, "/v1/photos/recent", limit=4)
    refs = [item["ref"] for item in items]
    assert refs == [
        "s3://p/flagged.jpg",
        "s3://p/crowd.jpg",
        "s3://p/cat.jpg",
        "s3://p/dog.jpg",
        "s3://p/car-blue.jpg",
        "s3://p/car-red.jpg",
    ]
    assert pages == 2
    assert items[3]["tags"][:2] == ["dog", "person"]


def test_recent_filters_by_people_tag_and_safety(api: TestClient) -> None:
    crowd, _ = all_pages(api, "/v1/photos/recent", min_people=3)
    assert [i["ref"] for i in crowd] == ["s3://p/crowd.jpg"]
    beach_safe, _ = all_pages(api, "/v1/photos/recent", tag="beach", safe=True)
    assert [i["ref"] for i in beach_safe] == [
        "s3://p/crowd.jpg",
        "s3://p/dog.jpg",
        "s3://p/car-blue.jpg",
    ]


def test_text_search_pages_through_ranked_hits_without_repeats(api: TestClient) -> None:
    first = api.get("/v1/search", params={"q": "a car", "limit": 1}).json()
    assert first["tags"] == ["car"]
    assert [SearchHit.model_validate(h).ref for h in first["items"]] == ["s3://p/car-red.jpg"]
    items, pages = all_pages(api, "/v1/search", q="a car", limit=1)
    assert [i["ref"] for i in items] == ["s3://p/car-red.jpg", "s3://p/car-blue.jpg"]
    assert pages == 2


def test_text_search_binds_colours_and_names_unknown_words(api: TestClient) -> None:
    body = api.get("/v1/search", params={"q": "blue car by the beach"}).json()
    assert [h["ref"] for h in body["items"]] == ["s3://p/car-blue.jpg"]
    assert body["colours"] == ["blue"]
    odd = api.get("/v1/search", params={"q": "zeppelin"})
    assert odd.status_code == 422
    assert odd.json()["code"] == "invalid_request" and "'zeppelin'" in odd.json()["message"]
    some = api.get("/v1/search", params={"q": "a dog and a zeppelin"}).json()
    assert [h["ref"] for h in some["items"]] == ["s3://p/dog.jpg"]
    assert some["unknown"] == ["zeppelin"]


def test_tag_and_colour_search_without_text(api: TestClient) -> None:
    body = api.get("/v1/search", params={"tag": "animal"}).json()
    assert {h["ref"] for h in body["items"]} == {"s3://p/dog.jpg", "s3://p/cat.jpg"}
    red = api.get("/v1/search", params={"colour": "red"}).json()
    assert [h["ref"] for h in red["items"]] == ["s3://p/car-red.jpg"]


def test_a_search_without_anything_to_search_is_an_invalid_request(api: TestClient) -> None:
    answer = api.get("/v1/search")
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_request"


def test_a_cursor_of_another_query_is_refused(api: TestClient) -> None:
    page = api.get("/v1/search", params={"q": "a car", "limit": 1}).json()
    answer = api.get("/v1/search", params={"q": "a dog", "cursor": page["next"]})
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_request"
    assert api.get("/v1/photos/recent", params={"cursor": "garbage!"}).status_code == 422


def test_similar_ranks_every_other_photo_and_pages(api: TestClient) -> None:
    items, _ = all_pages(api, "/v1/similar", ref="s3://p/dog.jpg", limit=2)
    refs = [i["ref"] for i in items]
    assert "s3://p/dog.jpg" not in refs
    assert sorted(refs) == sorted(
        [
            "s3://p/car-red.jpg",
            "s3://p/car-blue.jpg",
            "s3://p/cat.jpg",
            "s3://p/crowd.jpg",
            "s3://p/flagged.jpg",
        ]
    )
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert api.get("/v1/similar", params={"ref": "s3://p/nope.jpg"}).status_code == 404


def test_recommend_leaves_out_liked_and_excluded_photos(api: TestClient) -> None:
    answer = api.post(
        "/v1/recommend",
        json={
            "liked": ["s3://p/dog.jpg", "s3://p/gone.jpg"],
            "exclude": ["s3://p/cat.jpg"],
            "k": 3,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    refs = [h["ref"] for h in body["hits"]]
    assert len(refs) == 3
    assert not {"s3://p/dog.jpg", "s3://p/cat.jpg"} & set(refs)
    assert body["missing"] == ["s3://p/gone.jpg"]


def test_failures_and_flagged_list_what_needs_a_look(api: TestClient) -> None:
    failures, pages = all_pages(api, "/v1/failures", limit=1)
    assert [f["ref"] for f in failures] == ["s3://p/broken-2.jpg", "s3://p/broken-1.jpg"]
    assert pages == 2
    assert {f["error"] for f in failures} == {"not_an_image"}
    flagged, _ = all_pages(api, "/v1/flagged")
    assert [f["ref"] for f in flagged] == ["s3://p/flagged.jpg"]
    looser, _ = all_pages(api, "/v1/flagged", threshold=0.005, limit=2)
    assert len(looser) == 6 and looser[0]["ref"] == "s3://p/flagged.jpg"


def test_facets_count_tags_colours_people_and_safety(api: TestClient) -> None:
    body = api.get("/v1/facets").json()
    assert body["total"] == 6
    tags = {f["name"]: f["count"] for f in body["tags"]}
    assert tags["beach"] == 4 and tags["car"] == 2 and "grey" not in tags
    assert {f["name"]: f["count"] for f in body["colours"]} == {"grey": 4, "red": 1, "blue": 1}
    assert body["people"] == [
        {"name": "0", "count": 4},
        {"name": "1", "count": 1},
        {"name": "3+", "count": 1},
    ]
    assert body["safety"] == [{"name": "safe", "count": 5}, {"name": "flagged", "count": 1}]


def test_thumbnails_are_webp_and_a_flagged_one_is_blurred_unless_asked(api: TestClient) -> None:
    plain = api.get("/v1/photos/thumbnail", params={"ref": "s3://p/cat.jpg"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(plain.content)).format == "WEBP"

    def spread(data: bytes) -> float:
        pixels = Image.open(io.BytesIO(data)).convert("L")
        low, high = pixels.getextrema()
        return float(high - low)

    # the flagged photo's thumbnail is one flat colour; put a sharp edge in it to see a blur
    edge = Image.new("RGB", (96, 72), "black")
    edge.paste((255, 255, 255), (48, 0, 96, 72))
    buffer = io.BytesIO()
    edge.save(buffer, "WEBP", lossless=True)
    api.app.state.thumbnails.put("s3://p/flagged.jpg", buffer.getvalue())  # type: ignore[attr-defined]
    blurred = api.get("/v1/photos/thumbnail", params={"ref": "s3://p/flagged.jpg"}).content
    shown = api.get(
        "/v1/photos/thumbnail", params={"ref": "s3://p/flagged.jpg", "show": True}
    ).content
    assert shown == buffer.getvalue()
    column = Image.open(io.BytesIO(blurred)).convert("L").crop((40, 30, 56, 31))
    low, high = column.getextrema()
    assert low > 20 and high < 235  # no sharp edge left
    assert spread(shown) == 255.0
    missing = api.get("/v1/photos/thumbnail", params={"ref": "s3://p/broken-1.jpg"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_a_job_is_enqueued_and_its_counts_read_back(
    api: TestClient,
) -> None:
    answer = api.post(
        "/v1/jobs", json={"refs": ["s3://p/new-1.jpg", "s3://p/new-1.jpg", "s3://p/new-2.jpg"]}
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["total"] == 2
    status = api.get(f"/v1/jobs/{job['id']}").json()
    assert status["id"] == job["id"]
    counts = JobCounts.model_validate(status["counts"])
    assert (counts.total, counts.queued, counts.finished) == (2, 2, False)
    assert status["counts"]["finished"] is False
    queued = api.app.state.client.queue_depth()  # type: ignore[attr-defined]
    assert queued == 1
    assert api.get("/v1/jobs/unknown").status_code == 404


def test_a_malformed_ref_is_refused_with_its_code_and_nothing_is_enqueued(
    api: TestClient,
) -> None:
    answer = api.post("/v1/jobs", json={"refs": ["s3://p/ok.jpg", "ftp://host/x.jpg"]})
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "invalid_ref" and body["ref"] == "ftp://host/x.jpg"
    assert api.app.state.client.queue_depth() == 0  # type: ignore[attr-defined]


def test_local_paths_are_refused_unless_workers_may_read_them(api: TestClient) -> None:
    answer = api.post("/v1/jobs", json={"refs": ["/etc/passwd"]})
    assert answer.status_code == 422
    assert answer.json()["code"] == "refused"


def test_a_presigned_url_is_stored_without_its_signature(api: TestClient) -> None:
    url = "https://photos.example.com/a.jpg?X-Amz-Signature=secret&X-Amz-Credential=k"
    job = api.post("/v1/jobs", json={"refs": [url]}).json()
    store = api.app.state.client.store  # type: ignore[attr-defined]
    assert "secret" not in str(store.job_counts(job["id"]))
    assert (
        api.get("/v1/photos", params={"ref": url}).json()["ref"]
        == "https://photos.example.com/a.jpg"
    )


def test_too_many_refs_or_too_big_a_body_is_refused(
    make_api: Callable[..., TestClient], filled: list[TagResult]
) -> None:
    api = make_api(max_refs=2, max_body_bytes=300)
    many = api.post("/v1/jobs", json={"refs": ["s3://p/1.jpg", "s3://p/2.jpg", "s3://p/3.jpg"]})
    assert many.status_code == 422 and "at most 2" in many.json()["message"]
    big = api.post("/v1/jobs", json={"refs": [f"s3://p/{'x' * 400}.jpg"]})
    assert big.status_code == 413 and big.json()["code"] == "too_large"

    def chunks() -> object:
        yield b'{"refs": ["s3://p/'
        for _ in range(10):
            yield b"y" * 50
        yield b'.jpg"]}'

    streamed = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_page_sizes_are_capped(
    make_api: Callable[..., TestClient], filled: list[TagResult]
) -> None:
    api = make_api(max_page=2)
    body = api.get("/v1/photos/recent", params={"limit": 100}).json()
    assert len(body["items"]) == 2 and body["next"]


def test_probes_and_openapi(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "ready": True,
        "broker": "ok",
        "store": "ok",
    }
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/photos", "/v1/search", "/v1/similar", "/v1/recommend"} <= set(paths)
    assert api.get("/docs").status_code == 200


def test_requests_are_counted_by_route_template_at_metrics(api: TestClient) -> None:
    def served(route: str) -> float:
        text = api.get("/metrics").text
        line = f'tagger_api_requests_total{{method="GET",route="{route}",status="200"}}'
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = served("/v1/photos")
    for name in ("dog", "cat", "crowd"):
        api.get("/v1/photos", params={"ref": f"s3://p/{name}.jpg"})
    assert served("/v1/photos") == before + 3
    assert "s3://p/dog.jpg" not in api.get("/metrics").text


def test_unreachable_thumbnail_storage_is_a_503_not_a_crash(api: TestClient) -> None:
    class Down:
        def get(self, identity: str) -> bytes | None:
            raise ThumbnailStoreError({identity: "EndpointConnectionError"})

    api.app.state.thumbnails = Down()  # type: ignore[attr-defined]
    answer = api.get("/v1/photos/thumbnail", params={"ref": "s3://p/cat.jpg"})
    assert answer.status_code == 503
    assert answer.json()["code"] == "transient"


def test_facets_are_reused_for_their_ttl(
    make_api: Callable[..., TestClient], filled: list[TagResult]
) -> None:
    cached, fresh = make_api(facets_ttl=600), make_api(facets_ttl=0)
    assert cached.get("/v1/facets").json()["total"] == 6
    assert fresh.get("/v1/facets").json()["total"] == 6
    store = cached.app.state.client.store  # type: ignore[attr-defined]
    store.save([made_up("s3://p/new.jpg", {"dog": 0.8}, seed=9, minutes=9)])
    assert cached.get("/v1/facets").json()["total"] == 6
    assert fresh.get("/v1/facets").json()["total"] == 7
