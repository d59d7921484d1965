"""`python -m wikipulse` runs the command line."""

from __future__ import annotations

from wikipulse.cli import main

raise SystemExit(main())
