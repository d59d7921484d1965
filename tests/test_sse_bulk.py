"""The bulk SSE parser of the live source gives exactly what `SSEParser` gives, on any input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_sse import _splits, _streams
from wikipulse.sse import SSEParser
from wikipulse.sse_bulk import BulkSSEParser, EventTooLarge


def _reference(chunks: list[bytes], last_id: str | None) -> dict[str, Any]:
    """What the live source made of SSEParser's events: messages, others, ids and retry."""
    parser = SSEParser(last_id)
    messages, others, dispatched = [], [], None
    for chunk in chunks:
        for event in parser.feed(chunk):
            if event.id is not None:
                dispatched = event.id
            if event.type == "message":
                messages.append((event.data, event.id or None))
            else:
                others.append((event.type, event.data))
    return {
        "messages": messages,
        "others": others,
        "dispatched_id": dispatched,
        "last_id": parser.last_id,
        "retry": parser.retry,
    }


def _bulk(chunks: list[bytes], last_id: str | None) -> dict[str, Any]:
    """The same summary from the bulk parser."""
    parser = BulkSSEParser(last_id)
    messages, others, dispatched = [], [], None
    for chunk in chunks:
        out = parser.feed(chunk)
        assert len(out.data) == len(out.positions)
        messages += zip(out.data, out.positions, strict=True)
        others += out.others
        if out.last_id is not None:
            dispatched = out.last_id
    return {
        "messages": messages,
        "others": others,
        "dispatched_id": dispatched,
        "last_id": parser.last_id,
        "retry": parser.retry,
    }


@given(st.data())
def test_any_stream_in_any_chunks_gives_what_the_reference_parser_gives(
    data: st.DataObject,
) -> None:
    """Messages with their positions, other events, the last dispatched id, the resume id and
    the retry value all equal those of SSEParser on the same chunks."""
    stream = data.draw(st.one_of(_streams(), st.binary(max_size=80)))
    chunks = data.draw(_splits(stream))
    last_id = data.draw(st.sampled_from([None, "", "seed"]))
    assert _bulk(chunks, last_id) == _reference(chunks, last_id)


_USUAL_BLOCKS = st.one_of(
    st.builds(
        lambda ident, data: b"event: message\nid: " + ident + b"\ndata: " + data + b"\n\n",
        st.sampled_from([b"1", b"", b"a\0b", b"[{}]"]),
        st.sampled_from([b"{}", b"", b"x\ndata: y", b"z\nid: 9"]),
    ),
    st.sampled_from([b"\n", b"event: other\n", b"data: loose\n", b": c\n", b"id: 7\n", b"\r"]),
)


@given(st.lists(_USUAL_BLOCKS, max_size=12), st.data())
def test_usual_and_unusual_event_blocks_mixed_give_what_the_reference_gives(
    blocks: list[bytes], data: st.DataObject
) -> None:
    """EventStreams-shaped events (some with an empty or NUL id, extra lines or empty data)
    between stray lines, in any chunks, give exactly SSEParser's results."""
    stream = b"".join(blocks)
    chunks = data.draw(_splits(stream))
    assert _bulk(chunks, "seed") == _reference(chunks, "seed")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_wikimedia_shaped_events_in_pieces_give_each_data_and_id(size: int) -> None:
    """Three `event/id/data` events cut every `size` bytes give their three JSON bodies and ids
    in order; the resume id is the third."""
    stream = b"".join(
        b'event: message\nid: [{"offset":%d}]\ndata: {"n":%d}\n\n' % (i, i) for i in range(3)
    )
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    result = _bulk(chunks, None)
    assert result["messages"] == [
        (f'{{"n":{i}}}'.encode(), f'[{{"offset":{i}}}]') for i in range(3)
    ]
    assert result["last_id"] == '[{"offset":2}]'
    assert result == _reference(chunks, None)


def test_an_event_larger_than_the_limit_is_refused_whether_in_one_line_or_many() -> None:
    """A 101-byte unfinished line and a 101-byte event of several data lines both raise
    EventTooLarge with a limit of 100; a 100-byte event passes."""
    with pytest.raises(EventTooLarge):
        BulkSSEParser(max_event_bytes=100).feed(b"data: " + b"x" * 101)
    parser = BulkSSEParser(max_event_bytes=100)
    for _ in range(10):
        parser.feed(b"data: " + b"y" * 10 + b"\n")
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"y" * 10 + b"\n")
    ok = BulkSSEParser(max_event_bytes=200).feed(b"data: " + b"z" * 100 + b"\n\n")
    assert ok.data == [b"z" * 100]


def test_an_eventstreams_shaped_event_larger_than_the_limit_in_one_read_is_refused() -> None:
    """The fast path for `event/id/data` blocks refuses data over the limit as SSEParser
    does, even when the whole event (and more after it) arrives in one read."""
    small = b"event: message\nid: 1\ndata: " + b"x" * 100 + b"\n\n"
    big = b"event: message\nid: 2\ndata: " + b"y" * 101 + b"\n\n"
    assert BulkSSEParser(max_event_bytes=100).feed(small + small).data == [b"x" * 100] * 2
    with pytest.raises(EventTooLarge):
        BulkSSEParser(max_event_bytes=100).feed(small + big + small)
