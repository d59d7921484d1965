"""Generated RecentChange files, made once per test session by the shared generator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import GENERATOR


def generate(directory: Path, events: int, seed: int, canaries: int = 3) -> Path:
    """Write `events` generated events to a file in `directory` (reused if already there)."""
    path = directory / f"gen-{events}-{seed}-{canaries}.ndjson"
    if not path.exists():
        with path.open("wb") as out:
            subprocess.run(
                [
                    sys.executable,
                    str(GENERATOR),
                    "--events",
                    str(events),
                    "--seed",
                    str(seed),
                    "--canaries",
                    str(canaries),
                ],
                stdout=out,
                check=True,
            )
    return path
