"""Generated event files for the benchmarks: made once by the project's own generator, kept in
memory (`/dev/shm`) where there is one, so that every variant reads them from memory (some
virtual machines drop a file of this size from the page cache between runs)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from wikipulse.generate import GeneratorOptions, write_file

__all__ = ["generated", "memory_dir"]


def memory_dir() -> Path:
    """Shared memory where it exists and is writable, else the temporary directory."""
    shm = Path("/dev/shm")  # noqa: S108  # fixed, named benchmark files, not secrets
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def generated(events: int, seed: int, directory: Path | None = None) -> Path:
    """Make (or reuse) a file of `events` generated events (`seed`) in `directory`."""
    path = (directory or memory_dir()) / f"recentchange-{events}-{seed}.ndjson"
    if not path.exists():
        print(f"generating {events:,} events into {path} ...", file=sys.stderr)
        write_file(GeneratorOptions(events, seed=seed), path)
    return path
