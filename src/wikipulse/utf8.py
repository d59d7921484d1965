"""Whether bytes are well-formed UTF-8, without building the str: in C where it was built.

An event with bad UTF-8 anywhere in it is malformed (see events.py), but msgspec checks only
the strings it decodes, so the bulk paths check each line first. `bytes.decode()` answers
by building the whole str, widened to 2 or 4 bytes a character for most non-Latin text; the
C extension `wikipulse._utf8` only reads the bytes: 190 instead of 440 ns a line of the
benchmarks' generated events (two thirds of them not ASCII), measured 2026-12-01.

`checked_lines` cuts a replay worker's memory-mapped range into lines and checks them in the
same pass: one call a block of lines instead of a `readline` a line and then the check.

The extension is optional: `pip install` builds it where a C compiler is found and goes on
without it where none is (pyproject.toml). Without it these functions give the same answers
through `bytes.decode()`. `ACCELERATED` says which is in use.
"""

from __future__ import annotations

from collections import deque
from itertools import filterfalse
from mmap import mmap

__all__ = ["ACCELERATED", "Lines", "all_valid_utf8", "checked_lines", "valid_utf8"]

#: What `checked_lines` cuts lines from: bytes, or a memory map of a file's bytes.
Lines = bytes | mmap


def _valid_utf8(data: bytes | bytearray | memoryview | mmap) -> bool:
    return _all_valid_utf8([data if isinstance(data, bytes) else bytes(data)])


def _all_valid_utf8(lines: list[bytes]) -> bool:
    try:
        # ASCII is UTF-8: only the other lines are decoded, each in one C-level call.
        deque(map(bytes.decode, filterfalse(bytes.isascii, lines)), 0)
    except UnicodeDecodeError:
        return False
    return True


def _checked_lines(data: Lines, start: int, stop: int, count: int) -> tuple[list[bytes], int, bool]:
    if not 0 <= start <= stop <= len(data) or count < 0:
        raise ValueError("checked_lines(): start, stop or count out of range")
    lines: list[bytes] = []
    pos = start
    while pos < stop and len(lines) < count:
        newline = data.find(b"\n", pos, stop)
        end = stop if newline < 0 else newline + 1
        lines.append(data[pos:end])
        pos = end
    return lines, pos, _all_valid_utf8(lines)


try:
    from wikipulse._utf8 import all_valid_utf8, checked_lines, valid_utf8
except ImportError:  # built without a C compiler
    ACCELERATED = False
    valid_utf8 = _valid_utf8
    all_valid_utf8 = _all_valid_utf8
    checked_lines = _checked_lines
else:
    ACCELERATED = True
