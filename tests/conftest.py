"""Shared fixtures: the async backend, paths to the shared recordings and generator."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Beside the checkout; a git worktree in a folder of worktrees finds it one level further up.
SHARED = next(
    (p / "shared" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()),
    ROOT.parent / "shared",
)
DATA_DIR = SHARED / "data"
GENERATOR = SHARED / "tools" / "gen_recentchange.py"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop uvicorn uses."""
    return "asyncio"
