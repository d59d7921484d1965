"""Generated RecentChange files, made by the project's own generator and reused within a run."""

from __future__ import annotations

from pathlib import Path

from wikipulse.generate import GeneratorOptions, write_file


def generate(
    directory: Path,
    events: int,
    seed: int,
    canaries: int = 3,
    page_skew: float = 0.0,
    rate: float = 55.0,
) -> Path:
    """Write `events` generated events to a file in `directory` (reused if already there).

    `rate` is events per second of event time: a low one spreads the file over hours.
    """
    path = directory / f"gen-{events}-{seed}-{canaries}-{page_skew}-{rate}.ndjson"
    options = GeneratorOptions(events, seed=seed, canaries=canaries, page_skew=page_skew, rate=rate)
    return write_file(options, path)
