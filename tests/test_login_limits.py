"""Login throttling: token buckets per address and per user, the bounded check queue, addresses."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr

from tests.test_api import FakeSource
from wikipulse.app import build_app
from wikipulse.auth import Authenticator
from wikipulse.config import load_settings
from wikipulse.ratelimit import LoginGuard, TokenBuckets, client_address
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRET = "login-limits-secret-0123456789abcdef01234567"
PASSWORD = "correct horse battery staple"
WRONG = "Tr0ub4dor&3-not-it"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(
    clock: Callable[[], float],
    *,
    hasher: PasswordHasher = FAST,
    queue_max: int = 8,
    trusted: frozenset[str] = frozenset(),
) -> FastAPI:
    settings = load_settings(
        environ={"WIKIPULSE_STORE": "memory"}, env_file=None, jwt_secret=SECRET
    )
    auth = Authenticator(
        SecretStr(SECRET),
        {"alice": hasher.hash(PASSWORD), "bob": hasher.hash(PASSWORD)},
        issuer="wikipulse",
        audience="wikipulse-api",
        ttl_seconds=600,
        hasher=hasher,
        queue_max=queue_max,
    )
    app = build_app(settings, store=MemoryStore(), source=FakeSource(), auth=auth)
    app.state.services.login_guard = LoginGuard(
        burst=5, interval=5.0, trusted_proxies=trusted, clock=clock
    )
    return app


@asynccontextmanager
async def _running(app: FastAPI) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


def _client(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client whose requests reach the app from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://wikipulse.test")


async def _login(
    client: httpx.AsyncClient, user: str, password: str, **headers: str
) -> httpx.Response:
    return await client.post(
        "/login", json={"username": user, "password": password}, headers=headers
    )


async def test_sixth_attempt_from_one_address_gets_429_then_the_right_password_works() -> None:
    """Five wrong passwords get 401, the sixth 429 (Retry-After 5); 5 s on, the right one wins."""
    clock = FakeClock()
    app = _app(clock)
    async with _running(app), _client(app, "127.0.0.2") as client:
        codes = [(await _login(client, "alice", WRONG)).status_code for _ in range(5)]
        refused = await _login(client, "alice", PASSWORD)
        clock.now += 4.9
        still = await _login(client, "alice", PASSWORD)
        clock.now += 0.1
        accepted = await _login(client, "alice", PASSWORD)
    assert codes == [401] * 5
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.json() == {"detail": "too many login attempts; try again later"}
    assert still.status_code == 429
    assert still.headers["retry-after"] == "1"
    assert accepted.status_code == 200
    assert "access_token" in accepted.json()


async def test_one_user_is_limited_across_addresses_and_others_are_not() -> None:
    """Five attempts on alice from five addresses exhaust alice, not bob nor a fresh address."""
    clock = FakeClock()
    app = _app(clock)
    async with _running(app):
        codes = []
        for n in range(2, 7):
            async with _client(app, f"127.0.0.{n}") as client:
                codes.append((await _login(client, "alice", WRONG)).status_code)
        async with _client(app, "127.0.0.7") as client:
            alice = await _login(client, "alice", PASSWORD)
            bob = await _login(client, "bob", PASSWORD)
    assert codes == [401] * 5
    assert alice.status_code == 429
    assert alice.headers["retry-after"] == "5"
    assert bob.status_code == 200


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    """Behind a trusted proxy each forwarded client has its own bucket; spoofing elsewhere fails."""
    clock = FakeClock()
    app = _app(clock, trusted=frozenset({"127.0.0.9"}))
    async with _running(app):
        async with _client(app, "127.0.0.9") as proxy:
            via_proxy = [
                (
                    await _login(proxy, "bob", WRONG, **{"X-Forwarded-For": f"10.0.0.{n}"})
                ).status_code
                for n in range(1, 5)
            ]
            via_proxy += [
                (await _login(proxy, "alice", WRONG, **{"X-Forwarded-For": "10.0.1.1"})).status_code
                for _ in range(6)
            ]
        async with _client(app, "127.0.0.8") as direct:
            spoofed = [
                (
                    await _login(direct, "nobody", WRONG, **{"X-Forwarded-For": f"10.0.2.{n}"})
                ).status_code
                for n in range(6)
            ]
    # bob: 4 wrong from 4 addresses; alice: 5 wrong from one forwarded address, then 429.
    assert via_proxy == [401] * 9 + [429]
    assert spoofed == [401] * 5 + [429]


def test_client_address_reads_the_forwarded_chain_from_the_right() -> None:
    """The rightmost address that is not a trusted proxy is the client; what it wrote is not."""
    trusted = {"127.0.0.9", "10.9.9.9"}
    headers = {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.9.9.9"}
    assert client_address("127.0.0.9", headers, trusted) == "203.0.113.7"
    assert client_address("127.0.0.8", headers, trusted) == "127.0.0.8"
    assert client_address("127.0.0.9", {}, trusted) == "127.0.0.9"
    assert client_address("127.0.0.9", {"x-forwarded-for": "junk"}, trusted) == "127.0.0.9"
    assert client_address(None, headers, trusted) == "unknown"


def test_token_buckets_refill_one_token_per_interval_and_forget_the_oldest() -> None:
    """A bucket refills one token per interval up to the burst; at most max_keys are kept."""
    clock = FakeClock()
    buckets = TokenBuckets(2, 3.0, clock=clock, max_keys=3)
    buckets.take("a")
    buckets.take("a")
    assert buckets.wait("a") == pytest.approx(3.0)
    clock.now += 1.5
    assert buckets.wait("a") == pytest.approx(1.5)
    clock.now += 100
    buckets.take("a")
    assert buckets.wait("a") == 0.0
    for key in ("b", "c", "d"):
        buckets.take(key)
    assert len(buckets) == 3
    assert buckets.wait("a") == 0.0  # forgotten: a full bucket again


async def test_a_full_check_queue_answers_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With one check allowed in flight and one running, the next login gets 503 at once."""
    clock = FakeClock()
    app = _app(clock, queue_max=1)
    release = threading.Event()
    entered = threading.Event()
    auth: Authenticator = app.state.services.auth
    real_check = auth.check_password

    def slow_check(username: str, password: str) -> bool:
        entered.set()
        release.wait(5)
        return real_check(username, password)

    auth.check_password = slow_check  # type: ignore[method-assign]
    async with (
        _running(app),
        _client(app, "127.0.0.2") as first,
        _client(app, "127.0.0.3") as second,
    ):
        with anyio.fail_after(5):
            pending = asyncio.ensure_future(_login(first, "alice", PASSWORD))
            await anyio.to_thread.run_sync(entered.wait, 5)
            busy = await _login(second, "bob", PASSWORD)
            release.set()
            done = await pending
            after = await _login(second, "bob", PASSWORD)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json() == {"detail": "too many logins at once; try again shortly"}
    assert [r.getMessage() for r in caplog.records if "too many password" in r.getMessage()] == [
        "login of user 'bob' from 127.0.0.3 refused: too many password checks at once"
    ]
    assert done.status_code == 200
    assert after.status_code == 200


async def test_a_bystander_logs_in_quickly_during_a_flood_from_another_address() -> None:
    """50 concurrent wrong logins from one address (real argon2 cost) leave another user < 2 s."""
    clock = FakeClock()
    app = _app(clock, hasher=PasswordHasher())  # the default cost: tens of ms per check
    async with (
        _running(app),
        _client(app, "127.0.0.2") as flood,
        _client(app, "127.0.0.3") as bystander,
    ):
        with anyio.fail_after(30):
            attack = [asyncio.ensure_future(_login(flood, "mallory", WRONG)) for _ in range(50)]
            await asyncio.sleep(0)
            started = time.perf_counter()
            good = await _login(bystander, "alice", PASSWORD)
            waited = time.perf_counter() - started
            codes = sorted(r.status_code for r in await asyncio.gather(*attack))
    hasher = PasswordHasher()
    check_started = time.perf_counter()
    hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    one_check = time.perf_counter() - check_started  # several times longer on a loaded machine
    assert good.status_code == 200
    assert waited < max(2.0, 4 * one_check), f"the bystander waited {waited:.2f}s"
    assert codes.count(401) == 5
    assert codes.count(429) == 45


async def test_refused_logins_are_logged_with_address_and_user_never_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password logs the user and address; 429s log one line per interval."""
    clock = FakeClock()
    app = _app(clock)
    with caplog.at_level(logging.DEBUG):
        async with _running(app), _client(app, "127.0.0.4") as client:
            for _ in range(8):
                await _login(client, "alice", WRONG)
    messages = [r.getMessage() for r in caplog.records]
    refused = [m for m in messages if m.startswith("login refused")]
    limited = [m for m in messages if m.startswith("login rate limit reached")]
    assert refused == ["login refused: wrong password or unknown user 'alice' from 127.0.0.4"] * 5
    assert limited == [
        "login rate limit reached (client address) for user 'alice' from 127.0.0.4; retry after 5s"
    ]
    assert all(WRONG not in m for m in messages)
