"""Decode-only loop: msgspec decodes every line into the event struct, and nothing more."""

from __future__ import annotations

import sys

from wikipulse.events import DECODE_ERRORS, decode_unchecked


def main(path: str) -> None:
    """Decode each line of the file and print how many decoded."""
    decoded = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                decode_unchecked(line)
            except DECODE_ERRORS:
                continue
            decoded += 1
    print(decoded)


if __name__ == "__main__":
    main(sys.argv[1])
