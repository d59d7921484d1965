"""The project's own event generator: deterministic, and as varied as the live stream."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from typing import Any

import pytest

from wikipulse.cli import main
from wikipulse.events import decode
from wikipulse.generate import GeneratorOptions, write

COUNT = 20_000


def _generate(**options: Any) -> bytes:
    out = io.BytesIO()
    write(GeneratorOptions(**options), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    """Twenty thousand events with the default options, parsed by the standard library."""
    return [json.loads(line) for line in _generate(count=COUNT, seed=5).splitlines()]


def test_same_seed_same_bytes() -> None:
    """A seed always gives the same bytes; another seed gives other events."""
    assert _generate(count=500, seed=9) == _generate(count=500, seed=9)
    assert _generate(count=500, seed=9) != _generate(count=500, seed=10)


def test_every_line_is_a_valid_event(sample: list[dict[str, Any]]) -> None:
    """Every generated line is one RecentChange the service accepts, with a unique meta.id."""
    assert len(sample) == COUNT
    for event in sample:
        decode(json.dumps(event))
    assert len({event["meta"]["id"] for event in sample}) == COUNT


def test_canaries_as_asked() -> None:
    """Exactly the requested number of canary events is mixed in."""
    lines = _generate(count=2000, seed=1, canaries=7).splitlines()
    assert sum(json.loads(line)["meta"]["domain"] == "canary" for line in lines) == 7


def test_the_varieties_of_the_live_stream(sample: list[dict[str, Any]]) -> None:
    """Types, bots, temporary, IP, suppressed and non-ASCII users and both dt precisions occur."""
    assert set(Counter(event["type"] for event in sample)) == {"edit", "new", "log", "categorize"}
    users = [event.get("user") for event in sample]
    named = [user for user in users if user is not None]
    assert 0 < users.count(None) < COUNT * 0.01  # suppressed users carry no `user` field
    assert any(user.startswith("~2026-") for user in named)  # temporary accounts
    assert any(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", user) for user in named)  # IP editors
    assert any(not user.isascii() for user in named)
    bots = sum(event["bot"] for event in sample)
    assert COUNT * 0.1 < bots < COUNT * 0.4
    stamps = [event["meta"]["dt"] for event in sample]
    assert any(re.fullmatch(r"[\d-]+T[\d:]+\.\d{3}Z", dt) for dt in stamps)
    assert any(re.fullmatch(r"[\d-]+T[\d:]+Z", dt) for dt in stamps)
    assert any(event["type"] == "new" and event["revision"]["old"] is None for event in sample)


def test_heavy_head_of_wikis_and_users(sample: list[dict[str, Any]]) -> None:
    """A few wikis carry much of the traffic over hundreds of others; users repeat."""
    servers = Counter(event["server_name"] for event in sample)
    assert servers.most_common(1)[0][0] == "commons.wikimedia.org"
    assert servers.most_common(1)[0][1] > COUNT * 0.15
    assert len(servers) > 400
    users = Counter(event["user"] for event in sample if "user" in event)
    assert len(users) < COUNT * 0.8
    assert users.most_common(1)[0][1] > 50


def test_hot_pages_only_with_page_skew() -> None:
    """With page_skew titles come back often; without it nearly every title is new."""

    def top_page(**options: Any) -> int:
        lines = _generate(count=5000, seed=2, **options).splitlines()
        pages = Counter((e["server_name"], e["title"]) for e in map(json.loads, lines))
        return pages.most_common(1)[0][1]

    assert top_page(page_skew=4.0) > 40
    assert top_page() <= 3


def test_event_time_follows_the_rate() -> None:
    """meta.dt advances from --start at about --rate events per second."""
    lines = _generate(count=6000, seed=3, rate=10.0).splitlines()
    first, last = (json.loads(lines[i])["meta"]["dt"] for i in (0, -1))
    assert first.startswith("2026-11-01T12:00:0")
    assert last[:15] in {"2026-11-01T12:0", "2026-11-01T12:1"}  # ~600 s later


def test_cli_writes_the_same_bytes(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """`wikipulse generate` prints exactly what the library writes."""
    assert main(["generate", "50", "--seed", "4", "--canaries", "1"]) == 0
    assert capsysbinary.readouterr().out == _generate(count=50, seed=4, canaries=1)


def test_cli_refuses_a_negative_count(capsys: pytest.CaptureFixture[str]) -> None:
    """A negative count is a usage error: exit 2 with a message, nothing written."""
    assert main(["generate", "-5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "count" in captured.err
