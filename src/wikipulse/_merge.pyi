from collections.abc import Callable, Sequence
from typing import Any

def merge(
    buckets: Sequence[tuple[bytes, bytes, bytes, bytes]], /
) -> tuple[bytes, bytes, bytes, bytes]: ...
def index(blob: bytes, pages: bool, head: int, /) -> tuple[bytes, bytes] | None: ...
def minutes(events: Sequence[tuple[object, ...]], /) -> dict[int, list[tuple[str, bytes]]]: ...
def decoded_minutes(
    events: list[Any],
    canary: str,
    cache: dict[str, int | None],
    minute_of: Callable[[str | None], int | None],
    /,
) -> dict[int, list[tuple[str, bytes]]]: ...
