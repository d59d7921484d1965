"""Logging set-up: readable text for people, JSON lines for log collectors, no secrets in either.

Every record passes `RedactingFilter` on its way to the handler, whichever library wrote it,
and httpx/httpcore are held at WARNING: their INFO line carries the full request URL, and
their DEBUG lines the headers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

from wikipulse.redact import redact_text

__all__ = ["QUIET_LOGGERS", "JsonFormatter", "RedactingFilter", "configure_logging"]

#: Library loggers that print URLs or headers below WARNING.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "h11")


class RedactingFilter(logging.Filter):
    """Mask URL credentials, query values, tokens, passwords and hashes in each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and traceback) with the secrets masked; keep it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render time, level, logger, message and any exception as JSON."""
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        elif record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send logs to stderr in the chosen format, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
