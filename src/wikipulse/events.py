"""The RecentChange event: the few fields the statistics need, decoded strictly; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from wikipulse.utf8 import valid_utf8

__all__ = [
    "CANARY_DOMAIN",
    "DECODE_ERRORS",
    "MAX_LENGTH",
    "InvalidEvent",
    "Length",
    "Meta",
    "RecentChange",
    "decode",
    "decode_json_only",
    "decode_unchecked",
    "parse_dt",
]

#: Wikimedia sends synthetic "canary" events through the stream to check it is alive.
CANARY_DOMAIN = "canary"


class InvalidEvent(ValueError):
    """Raised when bytes are not a well-formed RecentChange event."""


# gc=False: these structs hold only strings, numbers, bools and each other, so they can never be
# part of a cycle, and leaving them out of the garbage collector makes decoding markedly faster.
class Meta(msgspec.Struct, frozen=True, gc=False):
    """The event's envelope: its unique id, its domain and when it happened."""

    # Deduplication keys on it, so an empty id is as malformed as a missing one.
    id: Annotated[str, msgspec.Meta(min_length=1)]
    domain: str | None = None
    dt: str | None = None


#: The largest page length accepted, in bytes (MediaWiki's own limit is a few MiB). Bounded so
#: that no sum of them can pass 64 bits, which the stores' integers and blobs hold: a bucket
#: would need 2^32 events. An event with a length outside 0..MAX_LENGTH is malformed (before
#: the bound, one with a length of 10^23 made every commit fail, and the consumer retry it
#: for ever).
MAX_LENGTH = 2**32 - 1
_Bytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_LENGTH)]


class Length(msgspec.Struct, frozen=True, gc=False):
    """A page's length in bytes before and after the change (either may be null)."""

    old: _Bytes | None = None
    new: _Bytes | None = None


class RecentChange(msgspec.Struct, frozen=True, gc=False):
    """One change on a wiki, reduced to what the statistics and the time windows read."""

    meta: Meta
    server_name: str
    bot: bool
    # Absent on edits whose user was suppressed; such edits still count, but not as a user.
    user: str | None = None
    # What the time windows read: the kind of change, the page and its length in bytes.
    type: str | None = None
    title: str | None = None
    length: Length | None = None

    @property
    def is_canary(self) -> bool:
        """Whether this is one of Wikimedia's synthetic liveness events."""
        return self.meta.domain == CANARY_DOMAIN


# One decoder for the life of the process: building it compiles the schema once.
_decode_json = msgspec.json.Decoder(RecentChange).decode
#: msgspec's decoding alone, for hot loops: it checks the UTF-8 only of the strings it reads,
#: so callers must first check the bytes (`utf8.valid_utf8`) as `decode_unchecked` does.
decode_json_only = _decode_json

#: What `decode_unchecked` raises on bytes that are not a RecentChange.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)


def decode_unchecked(data: bytes | str) -> RecentChange:
    """Decode one event, raising one of `DECODE_ERRORS` (not InvalidEvent) if it is malformed.

    msgspec checks the UTF-8 of the strings it reads but skips the rest unchecked, so bytes
    are validated whole first: bad UTF-8 anywhere makes the event malformed, as JSON says.
    """
    if not isinstance(data, str) and not valid_utf8(data):
        data.decode()  # raises, with the codec's message
    return _decode_json(data)


def decode(data: bytes | str) -> RecentChange:
    """Decode one JSON event, rejecting anything that is not a RecentChange object."""
    try:
        return decode_unchecked(data)
    # ValidationError is a DecodeError; bad UTF-8 inside a string surfaces as UnicodeDecodeError.
    except DECODE_ERRORS as exc:
        raise InvalidEvent(str(exc)) from exc


def parse_dt(value: str | None) -> float | None:
    """A `meta.dt` (ISO 8601, `Z` or an offset, any sub-second precision) as a Unix time.

    A time without an offset is taken as UTC; anything unparsable gives None, because a bad
    timestamp must not break `/status` or a scrape.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
