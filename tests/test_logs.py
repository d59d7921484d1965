"""Secrets never reach a log line: URL credentials, query values, tokens, passwords, hashes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from wikipulse.logs import configure_logging
from wikipulse.redact import redact_text, redact_url

URL = "https://watcher:hunter2-url@stream.example.org/v2/stream?api_key=k3y-s3cr3t&since=5#frag"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g"
PLANTED = ("hunter2-url", "k3y-s3cr3t", JWT, "c2FsdHNhbHRzYWx0", "aGFzaGhhc2g", "pa55word")


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[str]]]:
    """Configure logging as `serve` does, into a string; restore the root logger afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    out = io.StringIO()
    formats: list[str] = []
    yield out, formats
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def _log_everything() -> None:
    logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', URL)
    logging.getLogger("httpcore.http11").debug("send_request_headers.started %s", URL)
    app = logging.getLogger("wikipulse.test")
    app.warning("stream connection failed: ConnectError for %s", URL)
    app.info("token %s issued; Authorization: Bearer %s", JWT, JWT)
    app.info("users: alice:%s", HASH)
    app.info('body {"username": "alice", "password": "pa55word"} and password=pa55word')
    try:
        raise RuntimeError(f"cannot reach {URL}")
    except RuntimeError:
        app.exception("consumer crashed")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_planted_secret_reaches_the_log_at_debug(
    fmt: str, captured: tuple[io.StringIO, list[str]]
) -> None:
    """At DEBUG, in text and JSON, the log says what happened but shows no planted secret."""
    out, _ = captured
    configure_logging("DEBUG", fmt)  # type: ignore[arg-type]
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)  # pytest swaps sys.stderr between set-up and call
    _log_everything()
    text = out.getvalue()
    for secret in PLANTED:
        assert secret not in text
    assert "HTTP Request:" not in text  # httpx's INFO line is held back altogether
    assert "send_request_headers" not in text
    assert "https://***@stream.example.org/v2/stream?api_key=***&since=***#***" in text
    assert "consumer crashed" in text
    assert "RuntimeError: cannot reach https://***@stream.example.org" in text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert [entry["message"].split(" ")[0] for entry in lines] == [
            "stream",
            "token",
            "users:",
            "body",
            "consumer",
        ]


def test_redact_url_keeps_scheme_host_port_and_path() -> None:
    """Userinfo goes, every query value and the fragment are masked, the rest stays."""
    assert redact_url(URL) == "https://***@stream.example.org/v2/stream?api_key=***&since=***#***"
    assert redact_url("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/x"


def test_redact_text_masks_tokens_hashes_and_secret_fields() -> None:
    """JWTs, bearer credentials, argon2 hashes and password fields are masked in free text."""
    assert redact_text(f"got {JWT} ok") == "got *** ok"
    assert redact_text("Authorization: Basic d2F0Y2hlcjpodW50ZXIy") == "Authorization: Basic ***"
    assert redact_text(f"alice:{HASH} next") == "alice:$argon2id$*** next"
    assert redact_text("password=pa55word next") == "password=*** next"
    assert redact_text("connected to stream.wikimedia.org") == "connected to stream.wikimedia.org"
