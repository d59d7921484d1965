"""The event decoder accepts RecentChange objects and refuses everything else."""

from __future__ import annotations

import pytest

from wikipulse.events import InvalidEvent, decode


def test_decodes_the_fields_the_statistics_need() -> None:
    """A full event decodes to its id, domain, user, bot flag and server name."""
    event = decode(
        b'{"meta":{"id":"e1","domain":"en.wikipedia.org","dt":"2026-11-01T12:00:00Z"},'
        b'"server_name":"en.wikipedia.org","bot":true,"user":"Bot1","type":"edit","title":"X"}'
    )
    assert (event.meta.id, event.meta.domain, event.meta.dt) == (
        "e1",
        "en.wikipedia.org",
        "2026-11-01T12:00:00Z",
    )
    assert (event.user, event.bot, event.server_name) == ("Bot1", True, "en.wikipedia.org")
    assert not event.is_canary


def test_a_suppressed_user_is_absent() -> None:
    """An event without a `user` field decodes with user None."""
    event = decode(b'{"meta":{"id":"e1"},"server_name":"s","bot":false}')
    assert event.user is None


def test_canary_domain_is_recognised() -> None:
    """`meta.domain == "canary"` marks a canary event."""
    assert decode(b'{"meta":{"id":"e","domain":"canary"},"server_name":"s","bot":false}').is_canary


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"a string"',
        b"{}",
        b'{"meta":{"id":"e"},"server_name":"s"}',  # bot missing
        b'{"meta":{"id":1},"server_name":"s","bot":false}',
        b'{"meta":{"id":""},"server_name":"s","bot":false}',  # no key to deduplicate on
        b'{"meta":{"id":"e"},"server_name":5,"bot":false}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":"yes"}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"user":7}',
        b'{"meta":"e","server_name":"s","bot":false}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"user":"\xff\xfe"}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":false',
        # a page length is a byte count up to events.MAX_LENGTH (2^32 - 1)
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"length":{"new":-1}}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"length":{"old":4294967296}}',
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"length":{"new":1e3}}',
        # bad UTF-8 in a field the statistics do not read still makes the JSON malformed
        b'{"meta":{"id":"e"},"server_name":"s","bot":false,"comment":"\xff\xfe"}',
    ],
)
def test_malformed_events_are_refused(raw: bytes) -> None:
    """Anything but a well-typed RecentChange object raises InvalidEvent."""
    with pytest.raises(InvalidEvent):
        decode(raw)
