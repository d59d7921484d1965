"""Replaying recorded streams: files as sources, decoded in worker processes when large.

Importing this package loads no asyncio and no pipeline, so `replay` can fork its workers
first (see `replay.command`, guarded by `tests/test_replay.py`).
"""
