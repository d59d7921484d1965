"""Authentication: argon2 password checks, HS256 JWT issue and verify, the Bearer dependency.

The credentials `serve` starts with (a configured secret and users, or invented ones) are
made in credentials.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Annotated, Any

import anyio
import jwt
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import Argon2Error, InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

__all__ = [
    "ALGORITHM",
    "Authenticator",
    "InvalidToken",
    "LoginBusy",
    "bearer_subject",
    "hash_password",
]

log = logging.getLogger(__name__)

#: The only algorithm issued and accepted: pinning it rules out `none` and key confusion.
ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "iat", "exp", "iss", "aud"]
# Clock skew tolerated between the replicas that issue and verify tokens.
_LEEWAY_SECONDS = 10
# A real token is ~250 bytes; refuse to parse anything absurdly long.
_MAX_TOKEN_CHARS = 4096
# Verified tokens remembered, so a client calling again does not pay for HMAC and claim checks.
_VERIFIED_CACHE_SIZE = 1024
# argon2 takes tens of MiB per check: bound how many run at once.
_CONCURRENT_CHECKS = 4
#: Checks waiting or running at once; past that `authenticate` refuses at once (LoginBusy).
DEFAULT_QUEUE_MAX = 8


class InvalidToken(Exception):
    """Raised when a bearer token is not one this service issued, or is no longer valid."""


class LoginBusy(Exception):
    """Raised when so many password checks are queued that another would wait too long."""


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    """Hash a password with argon2id for the WIKIPULSE_USERS setting."""
    return (hasher or PasswordHasher()).hash(password)


class Authenticator:
    """Check passwords against argon2 hashes and issue and verify short-lived JWTs."""

    def __init__(
        self,
        secret: SecretStr,
        users: Mapping[str, str],
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        hasher: PasswordHasher | None = None,
        queue_max: int = DEFAULT_QUEUE_MAX,
    ) -> None:
        if len(secret.get_secret_value().encode()) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        #: The HMAC key; a SecretStr so that a stray repr or log line shows `**********`.
        self.secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self._users = dict(users)
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._make_dummy_hash()
        self._limiter = anyio.CapacityLimiter(_CONCURRENT_CHECKS)
        self._queue_max = queue_max
        self._queued = 0
        # One check at a time per client address: the others from it wait their turn here,
        # so one address never holds more than one of the worker slots others need too.
        self._per_client: dict[str, tuple[asyncio.Lock, int]] = {}
        # Whole token string -> (subject, time until which it stays valid). Only tokens that
        # passed every check get in, and each leaves when its `exp` (plus the leeway) passes.
        self._verified: dict[str, tuple[str, float]] = {}

    @property
    def usernames(self) -> frozenset[str]:
        """The names of the configured users."""
        return frozenset(self._users)

    def _make_dummy_hash(self) -> str:
        # Verifying an unknown user against a hash of the same cost as a real one makes the
        # answer take as long as for a known user with a wrong password.
        first = next(iter(self._users.values()), None)
        if first is not None:
            try:
                hasher = PasswordHasher.from_parameters(extract_parameters(first))
                return hasher.hash(secrets.token_urlsafe(16))
            except Argon2Error:  # parameters argon2 can verify but refuses to hash with
                pass
        return self._hasher.hash(secrets.token_urlsafe(16))

    def check_password(self, username: str, password: str) -> bool:
        """Whether the user exists and the password matches, in about the same time either way."""
        stored = self._users.get(username)
        try:
            self._hasher.verify(stored if stored is not None else self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    @property
    def queue_full(self) -> bool:
        """Whether another check now would be refused with LoginBusy."""
        return self._queued >= self._queue_max

    async def authenticate(self, username: str, password: str, client: str | None = None) -> bool:
        """`check_password` in a worker thread, so the event loop keeps serving meanwhile.

        At most `queue_max` checks wait or run at once: beyond that LoginBusy is raised at
        once, so a flood cannot queue minutes of argon2 work in front of anyone else. The
        checks of one `client` (address) run one after another, so a flood from one address
        takes one worker, not all of them, and someone elsewhere waits about one check.
        """
        if self.queue_full:
            raise LoginBusy(f"{self._queued} password checks in progress")
        self._queued += 1
        try:
            if client is None:
                return await self._check(username, password)
            lock, users = self._per_client.get(client) or (asyncio.Lock(), 0)
            self._per_client[client] = (lock, users + 1)
            try:
                async with lock:
                    return await self._check(username, password)
            finally:
                lock, users = self._per_client[client]
                if users == 1:
                    del self._per_client[client]
                else:
                    self._per_client[client] = (lock, users - 1)
        finally:
            self._queued -= 1

    async def _check(self, username: str, password: str) -> bool:
        return await anyio.to_thread.run_sync(
            self.check_password, username, password, limiter=self._limiter
        )

    def issue(self, subject: str, now: float | None = None) -> str:
        """Sign a token for the subject that expires after the configured lifetime."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": subject,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return jwt.encode(claims, self.secret.get_secret_value(), algorithm=ALGORITHM)

    def cached_subject(self, token: str) -> str | None:
        """The subject of a token verified before and not yet expired, else None (no crypto)."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        subject, valid_until = entry
        if time.time() >= valid_until:
            self._verified.pop(token, None)
            return None
        return subject

    def verify(self, token: str) -> str:
        """Return the token's subject, or raise InvalidToken whatever is wrong with it."""
        cached = self.cached_subject(token)
        if cached is not None:
            return cached
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("token missing or too long")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret.get_secret_value(),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from None
        subject = claims["sub"]
        # A user removed from the configuration loses access even with a token still valid.
        if not isinstance(subject, str) or subject not in self._users:
            raise InvalidToken("unknown subject")
        self._remember(token, subject, claims["exp"])
        return subject

    def _remember(self, token: str, subject: str, exp: object) -> None:
        # PyJWT refuses a token once `exp <= now - leeway`: it is valid until `exp + leeway`.
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return
        verified = self._verified
        if len(verified) >= _VERIFIED_CACHE_SIZE:
            del verified[next(iter(verified))]  # the oldest entry
        verified[token] = (subject, float(exp) + _LEEWAY_SECONDS)


# A declaration with no state; it also puts the bearer scheme into the OpenAPI document.
_bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `POST /login`.",
)


def _unauthorized(detail: str, error: str | None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


async def bearer_subject(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> str:
    """FastAPI dependency: the subject of a valid `Authorization: Bearer` token, else 401."""
    if credentials is None:
        # No Authorization header, or one for another scheme (RFC 6750 section 3).
        raise _unauthorized("not authenticated", None)
    auth: Authenticator = request.app.state.services.auth
    try:
        return auth.verify(credentials.credentials)
    except InvalidToken as exc:
        log.debug("bearer token refused: %s", exc)
        raise _unauthorized("invalid or expired token", "invalid_token") from None
