"""Bearer tokens with scopes: no token 401, a read token cannot submit, the gallery's cookie
reads but never submits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tagger.config import ApiToken
from tagger.schemas import TagResult
from tests.unit.api.conftest import READER, SUBMITTER

JOB = {"refs": ["s3://p/new.jpg"]}


@pytest.fixture
def guarded(make_api: Callable[..., TestClient], filled: list[TagResult]) -> TestClient:
    return make_api(tokens=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/photos?ref=s3://p/dog.jpg"),
        ("get", "/v1/photos/recent"),
        ("get", "/v1/photos/thumbnail?ref=s3://p/dog.jpg"),
        ("get", "/v1/search?q=dog"),
        ("get", "/v1/similar?ref=s3://p/dog.jpg"),
        ("get", "/v1/failures"),
        ("get", "/v1/flagged"),
        ("get", "/v1/facets"),
        ("get", "/v1/jobs/x"),
        ("post", "/v1/jobs"),
        ("post", "/v1/recommend"),
    ],
)
def test_every_route_needs_a_token(guarded: TestClient, method: str, path: str) -> None:
    answer = guarded.request(method, path, json={"liked": ["s3://p/dog.jpg"], **JOB})
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    wrong = guarded.request(method, path, headers=bearer("not-a-token-at-all-x"))
    assert wrong.status_code == 401


def test_a_read_token_reads_but_cannot_submit(guarded: TestClient) -> None:
    assert guarded.get("/v1/search?q=dog", headers=bearer(READER)).status_code == 200
    answer = guarded.post("/v1/jobs", json=JOB, headers=bearer(READER))
    assert answer.status_code == 403
    assert answer.json() == {
        "code": "forbidden",
        "message": "token 'reader' lacks the 'submit' scope",
        "ref": None,
    }
    assert guarded.app.state.client.queue_depth() == 0  # type: ignore[attr-defined]


def test_a_submit_token_submits(guarded: TestClient) -> None:
    answer = guarded.post("/v1/jobs", json=JOB, headers=bearer(SUBMITTER))
    assert answer.status_code == 202
    assert guarded.app.state.client.queue_depth() == 1  # type: ignore[attr-defined]


def test_probes_and_the_pages_need_no_token(guarded: TestClient) -> None:
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/readyz").status_code == 200
    assert guarded.get("/").status_code == 200
    assert "text/html" in guarded.get("/photo").headers["content-type"]


def test_the_gallery_cookie_reads_but_cannot_submit(guarded: TestClient) -> None:
    refused = guarded.post("/signin", data={"token": "wrong-token-1234567"}, follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"] == "/signin?failed=1"
    assert "tagger_token" not in guarded.cookies
    signed = guarded.post("/signin", data={"token": SUBMITTER}, follow_redirects=False)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert guarded.get("/v1/photos/recent").status_code == 200
    # a cross-site form could post with the cookie; submitting needs the header
    assert guarded.post("/v1/jobs", json=JOB).status_code == 401


def test_tokens_must_be_long_enough() -> None:
    with pytest.raises(ValidationError, match="shorter than 16"):
        ApiToken(name="weak", token="short", scopes=["read"])


def test_without_tokens_everything_is_open_to_the_local_user(api: TestClient) -> None:
    assert api.get("/v1/facets").status_code == 200
    assert api.post("/v1/jobs", json=JOB).status_code == 202
