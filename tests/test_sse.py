"""The SSE parser against the WHATWG event-stream rules, by example and by property."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wikipulse.sse import EventTooLarge, SSEEvent, SSEParser

BOM = b"\xef\xbb\xbf"


def parse(*chunks: bytes, last_id: str | None = None) -> list[SSEEvent]:
    """Feed chunks to a fresh parser and collect every event."""
    parser = SSEParser(last_id)
    return [event for chunk in chunks for event in parser.feed(chunk)]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending_ends_lines(eol: bytes) -> None:
    """LF, CR and CRLF each end a line, and an empty line dispatches the event."""
    stream = b"id: 1" + eol + b"data: a" + eol + eol + b"data: b" + eol + eol
    assert parse(stream) == [SSEEvent("message", b"a", "1"), SSEEvent("message", b"b", "1")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    """A CRLF whose LF arrives in the next chunk ends one line, not two."""
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [
        SSEEvent("message", b"a\nb", None)
    ]


def test_lone_cr_then_lf_later_are_two_endings() -> None:
    """A CR, then an LF after other bytes, are separate line endings."""
    assert parse(b"data: a\r", b"data: b\n\n") == [SSEEvent("message", b"a\nb", None)]


def test_byte_order_mark_is_stripped_once() -> None:
    """A leading BOM is dropped, even split across chunks; a later one is not special."""
    assert parse(BOM[:1], BOM[1:2], BOM[2:] + b"data: x\n\n") == [SSEEvent("message", b"x", None)]
    # A second BOM belongs to the field name, which is then unknown and ignored.
    assert parse(BOM + BOM + b"data: x\n\ndata: y\n\n") == [SSEEvent("message", b"y", None)]


def test_comments_are_ignored() -> None:
    """Lines starting with a colon are comments and dispatch nothing."""
    assert parse(b":ok\n\n: hello\ndata: x\n:more\n\n") == [SSEEvent("message", b"x", None)]


def test_multi_line_data_is_joined_with_lf() -> None:
    """Several data lines join with LF; a bare `data` line adds an empty line."""
    assert parse(b'data: {\ndata:  "a": 1\ndata\ndata: }\n\n') == [
        SSEEvent("message", b'{\n "a": 1\n\n}', None)
    ]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    """`data:x` and `data: x` mean the same; further spaces are kept."""
    assert parse(b"data:x\n\ndata:  y\n\n") == [
        SSEEvent("message", b"x", None),
        SSEEvent("message", b" y", None),
    ]


def test_empty_data_line_still_dispatches() -> None:
    """An event with one empty data line dispatches with empty data."""
    assert parse(b"data:\n\n") == [SSEEvent("message", b"", None)]


def test_event_without_data_is_not_dispatched() -> None:
    """A block with no data field dispatches nothing, and its type does not leak on."""
    assert parse(b"event: error\n\ndata: x\n\n") == [SSEEvent("message", b"x", None)]


def test_event_type_applies_to_its_own_event_only() -> None:
    """`event:` sets the type of the event it is in; the next defaults to message."""
    assert parse(b"event: error\ndata: boom\n\ndata: ok\n\n") == [
        SSEEvent("error", b"boom", None),
        SSEEvent("message", b"ok", None),
    ]


def test_unknown_fields_are_ignored() -> None:
    """Fields other than data, event, id and retry are ignored."""
    assert parse(b"foo: bar\ndata : no\ndata: x\n\n") == [SSEEvent("message", b"x", None)]


def test_id_persists_and_can_be_cleared() -> None:
    """An id applies to later events until changed; an empty id clears it."""
    events = parse(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n", last_id="3")
    assert [e.id for e in events] == ["7", "7", ""]


def test_seeded_id_applies_until_the_server_sends_one() -> None:
    """A parser seeded with the last id stamps events with it until a new id arrives."""
    assert parse(b"data: a\n\n", last_id="[1]") == [SSEEvent("message", b"a", "[1]")]


def test_id_containing_nul_is_ignored() -> None:
    """An id field whose value contains NUL leaves the id unchanged."""
    parser = SSEParser("old")
    assert parser.feed(b"id: a\x00b\ndata: x\n\n") == [SSEEvent("message", b"x", "old")]
    assert parser.last_id == "old"


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"retry: 1500", 1500), (b"retry:0", 0), (b"retry: 1e3", None), (b"retry: -5", None)],
)
def test_retry_takes_only_ascii_digits(line: bytes, expected: int | None) -> None:
    """`retry:` sets the reconnection time only when its value is all ASCII digits."""
    parser = SSEParser()
    assert parser.feed(line + b"\n\n") == []
    assert parser.retry == expected


def test_event_cut_mid_way_yields_nothing() -> None:
    """An event without its closing blank line is never dispatched."""
    parser = SSEParser()
    assert parser.feed(b'data: a\n\nid: 2\ndata: {"half": ') == [SSEEvent("message", b"a", None)]
    assert parser.feed(b"") == []
    assert parse(b"data: x\n", b"data: y\r") == []


def test_cr_then_cr_is_a_blank_line() -> None:
    """With CR endings, two CRs in a row end the event even before any further byte."""
    assert parse(b"data: x\r\r") == [SSEEvent("message", b"x", None)]


def test_id_of_event_cut_mid_way_is_not_the_reconnection_id() -> None:
    """The id to reconnect with is the one at the last dispatch, not one of a cut event."""
    parser = SSEParser("1")
    parser.feed(b"id: 2\ndata: half")
    assert parser.last_id == "1"


def test_an_id_only_block_moves_the_reconnection_id() -> None:
    """A block with an id and no data dispatches nothing but still sets the id to resume from."""
    parser = SSEParser("1")
    assert parser.feed(b"id: 2\n\n") == []
    assert parser.last_id == "2"
    assert parser.feed(b"data: x\n\n") == [SSEEvent("message", b"x", "2")]


# -- properties ------------------------------------------------------------------------

_EOLS = st.sampled_from([b"\n", b"\r", b"\r\n"])
_LINE = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
_FIELD_LINE = st.one_of(
    st.builds(lambda v: b"data:" + v, _LINE),
    st.builds(lambda v: b"data: " + v, _LINE),
    st.builds(lambda v: b"id: " + v, _LINE),
    st.builds(lambda v: b"event: " + v, _LINE),
    st.builds(lambda v: b"retry: " + v, st.sampled_from([b"10", b"x", b""])),
    st.builds(lambda v: b":" + v, _LINE),
    st.just(b""),
    _LINE,
)


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    """Event-stream-like bytes: field lines and blank lines with mixed endings, maybe a BOM."""
    lines = draw(st.lists(st.tuples(_FIELD_LINE, _EOLS), max_size=30))
    body = b"".join(line + eol for line, eol in lines)
    tail = draw(st.binary(max_size=6))
    return draw(st.sampled_from([b"", BOM])) + body + tail


@st.composite
def _splits(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def _feed_all(chunks: list[bytes]) -> tuple[list[SSEEvent], str | None, int | None]:
    parser = SSEParser("seed")
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser.last_id, parser.retry


@given(st.data())
def test_any_split_of_a_stream_gives_the_same_events(data: st.DataObject) -> None:
    """Feeding a stream in any chunks gives the same events as feeding it whole."""
    stream = data.draw(st.one_of(_streams(), st.binary(max_size=60)))
    chunks = data.draw(_splits(stream))
    assert _feed_all(chunks) == _feed_all([stream])


@dataclass(frozen=True)
class _Block:
    type: str | None
    id: str | None
    data: list[bytes]


_TEXT = st.text(
    st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]), max_size=10
)
_BLOCKS = st.builds(
    _Block,
    st.one_of(st.none(), _TEXT),
    st.one_of(st.none(), _TEXT),
    st.lists(_LINE, max_size=4),
)


@given(
    st.lists(st.tuples(_BLOCKS, st.lists(_EOLS, min_size=8, max_size=8)), max_size=10),
    st.data(),
)
def test_encoded_events_parse_back(
    blocks: list[tuple[_Block, list[bytes]]], data: st.DataObject
) -> None:
    """Events encoded with arbitrary line endings and comments parse back to themselves."""
    stream = b""
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for block, eols in blocks:
        endings = iter(eols + [b"\n"] * len(block.data))
        stream += b": comment" + next(endings)
        if block.type is not None:
            stream += b"event: " + block.type.encode() + next(endings)
        if block.id is not None:
            stream += b"id: " + block.id.encode() + next(endings)
            last_id = block.id
        for line in block.data:
            stream += b"data: " + line + next(endings)
        blank = next(endings)
        if stream.endswith(b"\r") and blank == b"\n":
            blank = b"\r\n"  # CR then a lone LF would read as one CRLF, losing the blank line
        stream += blank
        if block.data:
            expected.append(SSEEvent(block.type or "message", b"\n".join(block.data), last_id))
    chunks = data.draw(_splits(stream))
    assert parse(*chunks) == expected


def test_an_endless_line_costs_linear_time() -> None:
    """20 MB of one unfinished line fed in 4 KiB chunks is scanned once, not once per chunk."""
    parser = SSEParser()
    piece = b"x" * 4096
    started = time.process_time()
    assert parser.feed(b"data: ") == []
    for _ in range(20 * 1024 * 1024 // len(piece)):
        assert parser.feed(piece) == []
    assert parser.feed(b"\n\n") == [SSEEvent("message", piece * 5120, None)]
    # Quadratic copying would move ~50 GB here; linear work takes a fraction of a second.
    assert time.process_time() - started < 3.0


def test_a_line_longer_than_the_limit_raises_with_the_events_before_it() -> None:
    """An unfinished line one byte over the limit raises, handing over the events completed."""
    parser = SSEParser(max_event_bytes=100)
    with pytest.raises(EventTooLarge) as caught:
        parser.feed(b"id: 1\ndata: ok\n\ndata: " + b"y" * 95)
    assert caught.value.events == [SSEEvent("message", b"ok", "1")]
    assert caught.value.limit == 100


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    """A data line of exactly the limit (field name included) still makes an event."""
    parser = SSEParser(max_event_bytes=100)
    line = b"data:" + b"z" * 95
    assert parser.feed(line + b"\n\n") == [SSEEvent("message", b"z" * 95, None)]


def test_a_complete_overlong_line_in_one_chunk_raises() -> None:
    """A whole line over the limit, ended within the same chunk, raises too."""
    parser = SSEParser(max_event_bytes=100)
    with pytest.raises(EventTooLarge) as caught:
        parser.feed(b"data: " + b"y" * 200 + b"\n\n")
    assert caught.value.events == []


def test_many_short_data_lines_over_the_limit_raise() -> None:
    """An event built of many short data lines is limited by its total size."""
    parser = SSEParser(max_event_bytes=100)
    for _ in range(11):  # 11 lines of 9 bytes each (value and joining LF): 99 bytes
        assert parser.feed(b"data: 12345678\n") == []
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: 12345678\n")
