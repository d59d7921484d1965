"""Generated event files for the benchmarks: made once by the project's own generator, kept in
memory (`/dev/shm`) where there is one, so that every variant reads them from memory (some
virtual machines drop a file of this size from the page cache between runs)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from wikipulse.generate import GeneratorOptions, write_file

__all__ = ["compile_package", "generated", "memory_dir"]


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


def compile_package() -> Path:
    """Write the package's bytecode, as an installed package has it; return the package's path.

    pip compiles a package when it installs it (the Docker image's too). An editable install
    on a machine with PYTHONDONTWRITEBYTECODE set (this one; the Dockerfile sets it as well)
    never writes it, so every process would compile the modules it imports as it starts: a
    one-shot command timed from start to exit pays that in full (0.15-0.2 s of a 1.3-1.5 s
    replay of 500,000 events, measured 2026-12-01).
    """
    import compileall

    import wikipulse

    package = Path(wikipulse.__file__).parent
    compileall.compile_dir(package, quiet=1)
    return package
