"""The UTF-8 check answers exactly as `bytes.decode()` does, in C and in its Python fallback."""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import chain, product

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
if C is not None:
    CHECKS.append(("c", C.valid_utf8, C.all_valid_utf8))  # type: ignore[attr-defined]

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
