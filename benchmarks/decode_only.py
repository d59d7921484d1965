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
    # No argparse: its import would count in the timed process.
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: {sys.argv[0]} FILE\n{__doc__}", file=sys.stderr)
        raise SystemExit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    main(sys.argv[1])
