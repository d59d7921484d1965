"""wikipulse: live statistics of Wikimedia's RecentChange stream behind an authenticated API."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
