"""Password checks, token issue and verify, and the credentials prepared at serve time."""

from __future__ import annotations

import io
import logging
import re
import time
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher, Type
from pydantic import SecretStr

from wikipulse.auth import Authenticator, InvalidToken, hash_password
from wikipulse.config import ConfigError, Settings, load_settings
from wikipulse.credentials import prepare_credentials

# Cheap argon2 parameters keep the suite fast; verification reads them from each hash.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRET = "unit-test-secret-0123456789abcdef0123456789"
PASSWORD = "correct horse battery staple"
NOW = 1_700_000_000


def _settings(**overrides: Any) -> Settings:
    return load_settings(environ={}, env_file=None, **overrides)


def _auth(users: dict[str, str] | None = None, ttl: int = 600) -> Authenticator:
    return Authenticator(
        SecretStr(SECRET),
        {"alice": FAST.hash(PASSWORD)} if users is None else users,
        issuer="wikipulse",
        audience="wikipulse-api",
        ttl_seconds=ttl,
        hasher=FAST,
    )


def test_check_password_accepts_the_right_password() -> None:
    """A configured user with the right password is accepted."""
    assert _auth().check_password("alice", PASSWORD) is True


def test_check_password_refuses_a_wrong_password() -> None:
    """A configured user with a wrong password is refused."""
    assert _auth().check_password("alice", PASSWORD + "!") is False


def test_check_password_refuses_an_unknown_user() -> None:
    """A user that is not configured is refused, even with a password another user has."""
    assert _auth().check_password("mallory", PASSWORD) is False


@pytest.mark.parametrize(
    "hasher",
    [
        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I),
        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.D),
        PasswordHasher(time_cost=2, memory_cost=16, parallelism=2, hash_len=16, salt_len=8),
        PasswordHasher(),  # the default cost, as `wikipulse hash-password` makes
    ],
    ids=["argon2i", "argon2d", "other-parameters", "default"],
)
def test_any_argon2_hash_in_the_configuration_verifies(hasher: PasswordHasher) -> None:
    """Verification reads the variant and cost from each stored hash, not from our hasher."""
    auth = _auth({"alice": hasher.hash(PASSWORD)})
    assert auth.check_password("alice", PASSWORD) is True
    assert auth.check_password("alice", "wrong") is False


def test_hash_password_makes_a_hash_the_authenticator_accepts() -> None:
    """`hash_password` produces an argon2id hash that verifies the same password."""
    stored = hash_password(PASSWORD, FAST)
    assert stored.startswith("$argon2id$")
    assert _auth({"bob": stored}).check_password("bob", PASSWORD) is True


@pytest.mark.anyio
async def test_authenticate_checks_in_a_worker_thread() -> None:
    """The async check gives the same answers as the synchronous one."""
    auth = _auth()
    assert await auth.authenticate("alice", PASSWORD) is True
    assert await auth.authenticate("alice", "nope") is False
    assert await auth.authenticate("nobody", PASSWORD) is False


def test_issued_token_has_exactly_the_five_claims_and_hs256() -> None:
    """A token carries sub, iat, exp, iss and aud, signed with HS256."""
    token = _auth(ttl=600).issue("alice", now=NOW)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "alice",
        "iat": NOW,
        "exp": NOW + 600,
        "iss": "wikipulse",
        "aud": "wikipulse-api",
    }


def test_verify_returns_the_subject_of_a_fresh_token() -> None:
    """A token just issued verifies to its subject."""
    auth = _auth()
    assert auth.verify(auth.issue("alice")) == "alice"


def test_verify_tolerates_a_few_seconds_of_clock_skew() -> None:
    """A token that expired 5 seconds ago still verifies; one 30 seconds past does not."""
    import time

    auth = _auth(ttl=60)
    now = time.time()
    assert auth.verify(auth.issue("alice", now=now - 65)) == "alice"
    with pytest.raises(InvalidToken):
        auth.verify(auth.issue("alice", now=now - 90))


def test_verify_refuses_a_user_no_longer_configured() -> None:
    """A valid token for a user removed from the configuration is refused."""
    token = _auth().issue("alice")
    others = _auth({"bob": FAST.hash(PASSWORD)})
    with pytest.raises(InvalidToken, match="unknown subject"):
        others.verify(token)


def test_verify_refuses_an_overlong_token() -> None:
    """A token longer than any this service issues is refused without parsing."""
    with pytest.raises(InvalidToken, match="too long"):
        _auth().verify("a" * 5000)


def test_a_secret_shorter_than_32_bytes_is_refused() -> None:
    """HS256 with a short key is brute-forceable, so the Authenticator will not take one."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Authenticator(SecretStr("short"), {}, issuer="i", audience="a", ttl_seconds=60, hasher=FAST)


def test_secret_is_masked_in_repr() -> None:
    """The secret attribute prints as asterisks, so a stray log line cannot leak it."""
    assert SECRET not in repr(_auth().secret)
    assert SECRET not in str(_auth().secret)


def test_configured_credentials_are_used_as_given(caplog: pytest.LogCaptureFixture) -> None:
    """With a secret and users configured, nothing is generated, printed or warned about."""
    err = io.StringIO()
    settings = _settings(jwt_secret=SECRET, users={"alice": FAST.hash(PASSWORD)})
    with caplog.at_level(logging.DEBUG, logger="wikipulse"):
        auth = prepare_credentials(settings, hasher=FAST, stderr=err)
    assert err.getvalue() == ""
    assert caplog.records == []
    assert auth.secret.get_secret_value() == SECRET
    assert auth.usernames == frozenset({"alice"})
    assert auth.check_password("alice", PASSWORD) is True


def test_missing_secret_is_generated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Without WIKIPULSE_JWT_SECRET a random 32+ byte secret is used and a warning says why."""
    settings = _settings(users={"alice": FAST.hash(PASSWORD)})
    with caplog.at_level(logging.DEBUG, logger="wikipulse"):
        first = prepare_credentials(settings, hasher=FAST, stderr=io.StringIO())
        second = prepare_credentials(settings, hasher=FAST, stderr=io.StringIO())
    secret = first.secret.get_secret_value()
    assert len(secret.encode()) >= 32
    assert secret != second.secret.get_secret_value()
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("wikipulse.auth", logging.WARNING)
    ] * 2
    assert "WIKIPULSE_JWT_SECRET is not set" in caplog.records[0].getMessage()
    assert "stops working when this process exits" in caplog.records[0].getMessage()
    assert secret not in caplog.text
    with pytest.raises(InvalidToken):
        second.verify(first.issue("alice"))


def test_missing_users_get_an_admin_with_a_password_printed_once(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no users, `admin` gets a random password shown once on stderr and never logged."""
    settings = _settings(jwt_secret=SECRET)
    with caplog.at_level(logging.DEBUG, logger="wikipulse"):
        auth = prepare_credentials(settings, hasher=FAST)
    out, err = capsys.readouterr()
    match = re.search(r"with password:\n\n {4}(\S+)\n", err)
    assert match is not None
    password = match.group(1)
    assert len(password) >= 20
    assert err.count(password) == 1
    assert out == ""
    assert "wikipulse hash-password" in err
    assert "WIKIPULSE_USERS='admin:<the printed hash>'" in err
    assert password not in caplog.text
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert auth.usernames == frozenset({"admin"})
    assert auth.check_password("admin", password) is True
    assert auth.check_password("admin", password + "x") is False


def test_an_unusable_hash_stops_start_up_naming_the_setting() -> None:
    """A user whose hash argon2 cannot read is a configuration error naming WIKIPULSE_USERS."""
    settings = _settings(jwt_secret=SECRET, users={"alice": "$argon2id$v=19$m=x,t=1,p=1$c2$aA"})
    with pytest.raises(ConfigError, match=r"WIKIPULSE_USERS: the hash of user 'alice'"):
        prepare_credentials(settings, hasher=FAST, stderr=io.StringIO())


class _Clock:
    """A settable stand-in for the `time` module that `wikipulse.auth` reads."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_verified_token_is_remembered_until_its_exp_plus_the_leeway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After verify, cached_subject gives "alice" without crypto up to exp + 10 s, then None
    (and the entry is dropped); a token that failed verification is never remembered."""
    auth = _auth(ttl=600)
    issued = time.time()
    token = auth.issue("alice", now=issued)
    assert auth.cached_subject(token) is None
    assert auth.verify(token) == "alice"
    clock = _Clock(int(issued) + 600 + 9.9)
    monkeypatch.setattr("wikipulse.auth.time", clock)
    assert auth.cached_subject(token) == "alice"
    clock.now = int(issued) + 600 + 10
    assert auth.cached_subject(token) is None
    assert token not in auth._verified
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        auth.verify(forged)
    assert auth.cached_subject(forged) is None


def test_the_verified_token_cache_is_bounded_and_keyed_by_the_whole_token() -> None:
    """1,025 verified tokens leave 1,024 remembered, the oldest gone; a token that differs
    from a remembered one in its last character is not found."""
    auth = _auth(ttl=3600)
    start = time.time()  # read once: a clock read per token could issue two alike across a second
    tokens = [auth.issue("alice", now=start - i) for i in range(1025)]
    for token in tokens:
        auth.verify(token)
    assert len(auth._verified) == 1024
    assert auth.cached_subject(tokens[0]) is None
    assert auth.cached_subject(tokens[-1]) == "alice"
    assert auth.cached_subject(tokens[-1][:-1]) is None
