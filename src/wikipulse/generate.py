"""Realistic, deterministic RecentChange events as NDJSON, for tests, benchmarks and trials.

The shape follows Wikimedia's `mediawiki/recentchange/1.0.0` schema and what the live stream
shows: edit, new, log and categorize events over about 900 wikis with a heavy head (Commons,
Wikidata and English Wikipedia carry most of the traffic); users drawn from a Zipf-like law, a
few hundred bot accounts that make a large share of the edits, temporary accounts (`~2026-...`),
IP editors, suppressed users (no `user` field), non-ASCII names and titles; null revision
fields; `meta.dt` with second or millisecond precision; and a few canary events. With
`page_skew` the titles come from a heavy-headed set of pages per wiki, so some pages are hot.

The same seed always gives the same bytes, on every platform: only `random.Random` is used.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

__all__ = ["GeneratorOptions", "events", "write", "write_file"]

_LANGUAGES = [
    "en",
    "de",
    "fr",
    "ja",
    "es",
    "ru",
    "it",
    "zh",
    "pt",
    "pl",
    "nl",
    "ar",
    "fa",
    "uk",
    "sv",
    "he",
    "id",
    "vi",
    "ko",
    "cs",
    "fi",
    "hu",
    "tr",
    "no",
    "ro",
    "da",
    "ca",
    "sr",
    "el",
    "bg",
    "th",
    "ms",
    "eo",
    "lt",
    "sk",
    "hr",
    "sl",
    "et",
    "lv",
    "hi",
    "bn",
    "ta",
    "te",
    "ur",
    "hy",
    "ka",
    "az",
    "kk",
    "uz",
    "be",
    "eu",
    "gl",
    "nn",
    "simple",
]
_PROJECTS = ("wikipedia", "wiktionary", "wikisource", "wikibooks", "wikiquote", "wikivoyage")
# The head of the live stream, busiest first.
_BUSIEST = ("commons.wikimedia.org", "www.wikidata.org", "en.wikipedia.org")
_SPECIAL = ("meta.wikimedia.org", "species.wikimedia.org", "www.mediawiki.org")
_PEOPLE = ("Ærøskøbing", "Фёдор", "山田", "محمد", "Zoë-Ann", "Łukasz", "Σωκράτης", "김철수")
_TITLE_STEMS = ("Q", "Item ", "Страница ", "ページ", "Café ", "File:Photo ", "Talk:Topic ")
_KINDS = ("edit", "new", "log", "categorize")
_KIND_WEIGHTS = (68, 6, 11, 15)
WIKI_COUNT = 900


@dataclass(frozen=True, slots=True)
class GeneratorOptions:
    """What to generate: how many events, from which seed, starting when, how fast."""

    count: int
    seed: int = 1
    canaries: int = 3
    start: datetime = datetime(2026, 11, 1, 12, tzinfo=UTC)
    rate: float = 55.0  # events per second of event time, on average (the live feed's)
    page_skew: float = 0.0  # 0: every title new; > 0: hot pages, e.g. 4

    def __post_init__(self) -> None:
        if self.count < 0 or self.canaries < 0 or self.rate <= 0 or self.page_skew < 0:
            raise ValueError("count and canaries must be >= 0, rate > 0 and page_skew >= 0")


def _wikis(rng: random.Random) -> list[str]:
    names = list(_BUSIEST)
    for project in _PROJECTS:
        names += [f"{lang}.{project}.org" for lang in _LANGUAGES]
    names += _SPECIAL
    names = list(dict.fromkeys(names))  # en.wikipedia.org stays at the head, once
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(names) < WIKI_COUNT:
        code = "".join(rng.choice(letters) for _ in range(rng.choice((2, 3, 4))))
        name = f"{code}.wikipedia.org"
        if name not in names:
            names.append(name)
    return names


def _head(rng: random.Random, n: int, power: float) -> int:
    """An index below n, small ones far likelier: u**power piles the mass near zero."""
    return min(n - 1, int(n * rng.random() ** power))


def _user(rng: random.Random, rank: int) -> str | None:
    kind = rank % 29
    if kind == 0:
        return f"~2026-{rank % 100_000:05d}-{rank % 89:02d}"  # temporary account
    if kind in (1, 2):
        return f"{10 + rank % 200}.{rank % 251}.{rank * 7 % 253}.{rank * 13 % 255}"  # IP editor
    if kind == 3:
        return f"{_PEOPLE[rank % len(_PEOPLE)]} {rank}"
    if rng.random() < 0.002:
        return None  # suppressed: the event carries no user at all
    return f"Editor{rank}"


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _timestamp(rng: random.Random, when: datetime) -> str:
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if rng.random() < 0.65:
        return f"{text}.{when.microsecond // 1000:03d}Z"
    return f"{text}Z"


def events(options: GeneratorOptions) -> Iterator[dict[str, Any]]:
    """Yield the events the options describe, as JSON-ready dicts, oldest first."""
    rng = random.Random(options.seed)  # noqa: S311 -- test data, reproducible by seed, no secret
    wikis = _wikis(rng)
    canary_at = set(rng.sample(range(options.count), min(options.canaries, options.count)))
    when = options.start
    offset = 4_000_000_000 + rng.randrange(1_000_000)
    mean_gap_ms = 1000.0 / options.rate
    for index in range(options.count):
        when += timedelta(milliseconds=rng.expovariate(1.0 / mean_gap_ms))
        offset += 1 + rng.randrange(30)
        server = wikis[_head(rng, len(wikis), 5.0)]
        bot = rng.random() < (0.5 if server == "www.wikidata.org" else 0.15)
        user = f"Robot{_head(rng, 400, 3.0)}bot" if bot else _user(rng, _head(rng, 250_000, 5.0))
        kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        if options.page_skew > 0:
            page = _head(rng, 100_000, options.page_skew)
            title = f"{_TITLE_STEMS[page % len(_TITLE_STEMS)]}{page}"
        else:
            title = f"{rng.choice(_TITLE_STEMS)}{rng.randrange(10**7)}"
        event = _event(rng, index in canary_at, server, user, bot, kind, title, when, offset)
        yield event


def _event(
    rng: random.Random,
    canary: bool,
    server: str,
    user: str | None,
    bot: bool,
    kind: str,
    title: str,
    when: datetime,
    offset: int,
) -> dict[str, Any]:
    path = title.replace(" ", "_")
    event: dict[str, Any] = {
        "$schema": "/mediawiki/recentchange/1.0.0",
        "meta": {
            "uri": f"https://{server}/wiki/{path}",
            "request_id": _uuid4(rng),
            "id": _uuid4(rng),
            "dt": _timestamp(rng, when),
            "domain": "canary" if canary else server,
            "stream": "mediawiki.recentchange",
            "topic": "eqiad.mediawiki.recentchange",
            "partition": 0,
            "offset": offset,
        },
        "id": None if rng.random() < 0.01 else rng.randrange(10**9, 4 * 10**9),
        "type": kind,
        "namespace": -1 if kind == "log" else rng.choice((0, 0, 0, 1, 2, 4, 6, 14)),
        "title": title,
        "title_url": f"https://{server}/wiki/{path}",
        "comment": rng.choice(("", "/* History */", "Undo revision", "+[[Category:Café]]", "修正")),
        "timestamp": int(when.timestamp()),
        "bot": bot,
        "server_url": f"https://{server}",
        "server_name": server,
        "server_script_path": "/w",
        "wiki": server.split(".")[0] + "wiki",
        "parsedcomment": "",
    }
    if user is not None:
        event["user"] = user
    if kind in ("edit", "new"):
        new_length = rng.randrange(60_000)
        old_length = None if kind == "new" else max(0, new_length + int(rng.gauss(0, 800)))
        event["minor"] = rng.random() < 0.2
        event["length"] = {"old": old_length, "new": new_length}
        old_revision = None if kind == "new" else rng.randrange(10**8, 10**9)
        event["revision"] = {"old": old_revision, "new": rng.randrange(10**9, 2 * 10**9)}
    elif kind == "log":
        event["log_id"] = rng.randrange(10**8)
        event["log_type"] = rng.choice(("newusers", "upload", "move", "block", "patrol"))
        event["log_action"] = "create"
        event["log_params"] = [] if rng.random() < 0.5 else {"target": title}
    return event


def write(options: GeneratorOptions, out: BinaryIO) -> int:
    """Write the events as NDJSON (UTF-8, one object a line); return how many were written."""
    encode = msgspec.json.Encoder().encode  # keeps key order and writes non-ASCII as UTF-8
    written = 0
    block: list[bytes] = []
    for event in events(options):
        block.append(encode(event))
        written += 1
        if len(block) == 4096:
            out.write(b"\n".join(block) + b"\n")
            block.clear()
    if block:
        out.write(b"\n".join(block) + b"\n")
    return written


def write_file(options: GeneratorOptions, path: Path) -> Path:
    """Write the events to `path` unless a file is already there; return the path."""
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            write(options, out)
        partial.replace(path)  # a killed run never leaves a short file under the final name
    return path
