"""Keep secrets out of log lines: URL credentials and query values, tokens, passwords, hashes.

`redact_url` is for the places that log a URL on purpose; `redact_text` is the backstop the
log handler applies to every record (message and traceback), whoever wrote it: our code,
httpx, uvicorn or a store driver.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"

# scheme://rest-of-the-URL up to a space, a quote or an angle bracket.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>`]+")
# A JWT: three base64url parts, the first two JSON objects (`{"` encodes to `eyJ`).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# $argon2id$v=19$m=65536,t=3,p=4$salt$hash: keep the algorithm, drop the rest.
_ARGON2 = re.compile(r"\$argon2(id|i|d)\$[A-Za-z0-9+/=$,.-]*")
# password=..., "password": "...", api_key: ... and their relatives.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?\b(?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|auth
        |authorization|jwt_secret|credentials?)["']?\s*[=:]\s*)
    (?!(?:bearer|basic)\s)  # an Authorization value: its credential is masked above
    (["']?)([^\s"',&}]+)
    """
)


def redact_url(url: str) -> str:
    """The URL without its userinfo and with every query value masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        query = "&".join(
            f"{pair.partition('=')[0]}={MASK}" if pair else pair for pair in query.split("&")
        )
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """The text with URLs redacted and tokens, hashes and secret fields masked."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _ARGON2.sub(lambda m: f"$argon2{m.group(1)}${MASK}", text)
    return _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
