from collections.abc import Sequence
from typing import Any

def tail(
    keys: Sequence[Any], counts: Sequence[int], start: int, /
) -> tuple[bytes, bytes, bytes] | None: ...
