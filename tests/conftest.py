"""Shared fixtures: the async backend and the path of the recordings kept in the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Real recordings, kept in the repository with their source and licence (see its README).
DATA_DIR = ROOT / "tests" / "data"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop uvicorn uses."""
    return "asyncio"
