"""The credentials a process starts with: the configured JWT secret and users, or invented ones.

A first start without configuration must still be usable and safe: the JWT secret becomes a
random one (tokens then die with the process, which is said in the log) and, with no users,
`admin` gets a random password printed once on stderr, never to the log.
"""

from __future__ import annotations

import logging
import secrets
import sys
from typing import TYPE_CHECKING, TextIO

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError
from pydantic import SecretStr

from wikipulse.auth import Authenticator
from wikipulse.config import ConfigError

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["DEFAULT_ADMIN", "prepare_credentials"]

#: The authentication logger, as before this module was split from auth.py: log filters name it.
log = logging.getLogger("wikipulse.auth")

#: The user made on a first start without any configured.
DEFAULT_ADMIN = "admin"


def prepare_credentials(
    settings: Settings,
    *,
    hasher: PasswordHasher | None = None,
    stderr: TextIO | None = None,
) -> Authenticator:
    """Build the Authenticator for `serve`, inventing a JWT secret and an admin if none is set.

    A missing secret is replaced by a random one, with a warning that tokens die with the
    process. With no users, `admin` gets a random password printed once to stderr (never to the
    log, which may be shipped elsewhere). Raises ConfigError if a configured hash is unusable.
    """
    hasher = hasher or PasswordHasher()
    for name, stored in settings.users.items():
        try:
            extract_parameters(stored)
        except InvalidHashError:
            raise ConfigError(
                f"invalid setting WIKIPULSE_USERS: the hash of user {name!r} is not a valid "
                "argon2 hash (make one with `wikipulse hash-password`)"
            ) from None
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret
    else:
        secret = SecretStr(secrets.token_urlsafe(48))
        log.warning(
            "WIKIPULSE_JWT_SECRET is not set: signing tokens with a random secret, so every "
            "token stops working when this process exits and no other replica accepts them"
        )
    users = dict(settings.users)
    if not users:
        password = secrets.token_urlsafe(18)
        users[DEFAULT_ADMIN] = hasher.hash(password)
        _announce_admin(password, stderr or sys.stderr)
        log.warning(
            "no users configured (WIKIPULSE_USERS): created user %r with a one-time random "
            "password, printed on standard error",
            DEFAULT_ADMIN,
        )
    return Authenticator(
        secret,
        users,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.jwt_ttl_seconds,
        hasher=hasher,
        queue_max=settings.login_queue_max,
    )


def _announce_admin(password: str, out: TextIO) -> None:
    out.write(
        "\n"
        f"wikipulse: no users are configured, so user {DEFAULT_ADMIN!r} was created with "
        "password:\n"
        "\n"
        f"    {password}\n"
        "\n"
        "This password is shown only this once and lasts until the process exits.\n"
        "To set one permanently, run `wikipulse hash-password`, then start with\n"
        f"    WIKIPULSE_USERS='{DEFAULT_ADMIN}:<the printed hash>'\n"
        "\n"
    )
    out.flush()
