"""The UTF-8 check answers exactly as `bytes.decode()` does, in C and in its Python fallback."""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from itertools import chain, product
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wikipulse import utf8


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _c_module() -> object | None:
    try:
        from wikipulse import _utf8
    except ImportError:
        return None
    return _utf8


C = _c_module()
CHECKS: list[tuple[str, Callable[[bytes], bool], Callable[[list[bytes]], bool]]] = [
    ("python", utf8._valid_utf8, utf8._all_valid_utf8)
]
LINES: list[tuple[str, Callable[..., tuple[list[bytes], int, bool]]]] = [
    ("python", utf8._checked_lines)
]
if C is not None:
    CHECKS.append(("c", C.valid_utf8, C.all_valid_utf8))  # type: ignore[attr-defined]
    LINES.append(("c", C.checked_lines))  # type: ignore[attr-defined]

#: Bytes around every boundary of Table 3-7: lead bytes, the ranges their second byte may
#: take (E0, ED, F0, F4 narrow it), continuation bytes and bytes that never appear.
EDGES = [
    0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
    0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF8, 0xFE, 0xFF,
]  # fmt: skip
near_utf8 = st.lists(st.sampled_from(EDGES), max_size=12).map(bytes)
#: Mostly ASCII with a few such bytes, long enough for the eight-byte ASCII steps.
mixed = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=20).map(lambda b: bytes(x & 0x7F for x in b)), near_utf8
    ),
    max_size=8,
).map(b"".join)


@pytest.mark.parametrize(("name", "valid", "all_valid"), CHECKS, ids=[c[0] for c in CHECKS])
@settings(max_examples=500)
@given(data=st.one_of(st.binary(max_size=40), near_utf8, mixed, st.text().map(str.encode)))
def test_a_check_agrees_with_the_codec(
    name: str,
    valid: Callable[[bytes], bool],
    all_valid: Callable[[list[bytes]], bool],
    data: bytes,
) -> None:
    """Every answer equals whether `bytes.decode()` succeeds."""
    assert valid(data) is _decodes(data)
    assert all_valid([b"ascii", data, "ünï".encode()]) is _decodes(data)


@pytest.mark.parametrize(("name", "valid", "all_valid"), CHECKS, ids=[c[0] for c in CHECKS])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", True),
        ("ページ €ü 𝄞 \U0010ffff".encode(), True),
        (b"\xc0\xaf", False),  # an overlong '/'
        (b"\xe0\x80\xaf", False),  # overlong, three bytes
        (b"\xf0\x80\x80\xaf", False),  # overlong, four bytes
        (b"\xed\xa0\x80", False),  # a surrogate, U+D800
        (b"\xed\x9f\xbf", True),  # U+D7FF, just below them
        (b"\xf4\x90\x80\x80", False),  # above U+10FFFF
        (b"\xf5\x80\x80\x80", False),
        (b'{"comment": "\xff"}', False),
        (b"abcdefgh\xe3\x83", False),  # cut after eight ASCII bytes
        (b"abcdefg\xe3\x83\x9a", True),
    ],
)
def test_the_boundaries_of_well_formed_utf8(
    name: str,
    valid: Callable[[bytes], bool],
    all_valid: Callable[[list[bytes]], bool],
    data: bytes,
    expected: bool,
) -> None:
    """Overlong forms, surrogates, code points above U+10FFFF and cut sequences are refused."""
    assert _decodes(data) is expected
    assert valid(data) is expected
    assert all_valid([data]) is expected


@pytest.mark.parametrize(("name", "valid", "all_valid"), CHECKS, ids=[c[0] for c in CHECKS])
def test_every_sequence_of_up_to_four_edge_bytes(
    name: str, valid: Callable[[bytes], bool], all_valid: Callable[[list[bytes]], bool]
) -> None:
    """All 551,880 sequences of one to four of the edge bytes, alone and after eight ASCII bytes."""
    wrong = [
        data
        for data in map(bytes, chain.from_iterable(product(EDGES, repeat=n) for n in range(1, 5)))
        if valid(data) is not _decodes(data) or valid(b"abcdefgh" + data) is not _decodes(data)
    ]
    assert wrong == []


@pytest.mark.parametrize(("name", "checked_lines"), LINES, ids=[c[0] for c in LINES])
@given(
    data=st.lists(st.one_of(near_utf8, mixed, st.just(b"\n"), st.just(b"\r")), max_size=10).map(
        b"".join
    ),
    cut=st.tuples(st.integers(0, 60), st.integers(0, 60)),
    count=st.integers(0, 5),
)
def test_checked_lines_cut_and_check_as_a_split_would(
    name: str,
    checked_lines: Callable[..., tuple[list[bytes], int, bool]],
    data: bytes,
    cut: tuple[int, int],
    count: int,
) -> None:
    """The lines are those of a split on newlines only, the offset is after them, and the flag
    says whether all of them decode."""
    start, stop = sorted(min(c, len(data)) for c in cut)
    expected: list[bytes] = []
    rest = data[start:stop]
    while rest and len(expected) < count:  # \n only: splitlines would also cut at \r
        line, newline, rest = rest.partition(b"\n")
        expected.append(line + newline)
    lines, end, valid = checked_lines(data, start, stop, count)
    assert lines == expected
    assert end == start + sum(map(len, expected))
    assert valid is all(map(_decodes, expected))


@pytest.mark.parametrize(("name", "checked_lines"), LINES, ids=[c[0] for c in LINES])
def test_checked_lines_read_a_memory_map_and_refuse_a_bad_range(
    tmp_path: Path, name: str, checked_lines: Callable[..., tuple[list[bytes], int, bool]]
) -> None:
    """A memory-mapped file is read in place; a range outside the data is a ValueError."""
    path = tmp_path / "lines"
    path.write_bytes(b"one\nzwei \xc3\xbc\n\xff\nlast")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert checked_lines(mapped, 0, len(mapped), 2) == (
            [b"one\n", "zwei ü\n".encode()],
            12,
            True,
        )
        assert checked_lines(mapped, 12, len(mapped), 9) == ([b"\xff\n", b"last"], 18, False)
        for start, stop, count in ((0, 19, 1), (-1, 3, 1), (4, 3, 1), (0, 3, -1)):
            with pytest.raises(ValueError, match="out of range"):
                checked_lines(mapped, start, stop, count)


def test_an_empty_list_is_valid_and_other_objects_are_refused() -> None:
    """No lines: nothing to refuse. A list of anything but bytes is a TypeError in C."""
    for _, _, all_valid in CHECKS:
        assert all_valid([]) is True
    if C is not None:
        with pytest.raises(TypeError):
            C.all_valid_utf8(["text"])  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            C.all_valid_utf8((b"a",))  # type: ignore[attr-defined]
        assert C.valid_utf8(memoryview(b"\xe2\x82\xac")) is True  # type: ignore[attr-defined]


def test_the_c_extension_is_built_in_ci() -> None:
    """CI builds the extension (gcc is there): the fast path is what the tests exercise."""
    if os.environ.get("CI") != "true" and C is None:
        pytest.skip("the C extension was not built here (no C compiler at install)")
    assert C is not None
    assert utf8.ACCELERATED is True
    assert utf8.valid_utf8 is C.valid_utf8  # type: ignore[attr-defined]
