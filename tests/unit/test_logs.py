"""Log lines never carry a URL's query string, whoever formats them."""

from __future__ import annotations

import io
import json
import logging

from pythonjsonlogger.json import JsonFormatter

from tagger.logs import RedactingFilter, redact_text

SECRET = "X-Amz-Signature=deadbeefSECRET&X-Amz-Credential=AKIASECRET"


def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_queries_vanish_from_message_args_extra_and_tracebacks() -> None:
    logger, stream = capture()
    url = f"https://photos.example.com/a.jpg?w=640&{SECRET}"
    logger.info("fetching %s", url)
    logger.info("batch", extra={"refs": [url], "nested": {"ref": url}})
    try:
        raise ValueError(f"could not read {url}")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert "SECRET" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == "fetching https://photos.example.com/a.jpg?<redacted>"
    assert lines[1]["refs"] == ["https://photos.example.com/a.jpg?<redacted>"]
    assert "ValueError" in lines[2]["exc_info"]


def test_text_without_urls_is_left_alone() -> None:
    assert redact_text("s3://bucket/key?odd#name.jpg") == "s3://bucket/key?odd#name.jpg"
    assert redact_text("100% done, a=b?c") == "100% done, a=b?c"
