"""Shared fixtures: the async backend, paths to the shared recordings and generator."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA_DIR = SHARED / "data"
GENERATOR = SHARED / "tools" / "gen_recentchange.py"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop uvicorn uses."""
    return "asyncio"
