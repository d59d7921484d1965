"""The HTTP API and its wiring: login, bearer checks, statistics, status, docs and lifespan."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr

from wikipulse import __version__
from wikipulse.app import build_app
from wikipulse.auth import Authenticator
from wikipulse.cli import main
from wikipulse.config import Settings, load_settings
from wikipulse.consumer import ConsumerState
from wikipulse.feeds import RawEvent
from wikipulse.stats import Batch, Stats
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRET = "api-test-secret-0123456789abcdef0123456789"
OTHER_SECRET = "another-secret-0123456789abcdef0123456789"
PASSWORD = "correct horse battery staple"
TTL = 900
MISSING = {"detail": "not authenticated"}
INVALID = {"detail": "invalid or expired token"}


def _event(event_id: str, server: str, user: str | None, bot: bool, domain: str = "x") -> bytes:
    event: dict[str, Any] = {
        "meta": {"id": event_id, "domain": domain, "dt": "2024-05-01T12:00:00Z"},
        "server_name": server,
        "bot": bot,
        "type": "edit",
    }
    if user is not None:
        event["user"] = user
    return json.dumps(event).encode()


# Counted by hand: e1..e5 count once each (e1's repeat, the canary and the garbage do not);
# bots are e2 and e5; users Alice, Bob and Carol (e4 has none); en 2, de 2, commons 1.
KNOWN_EVENTS: list[RawEvent] = [
    (_event("e1", "en.wikipedia.org", "Alice", False), "p1"),
    (_event("e2", "en.wikipedia.org", "Bob", True), "p2"),
    (_event("e3", "de.wikipedia.org", "Alice", False), "p3"),
    (_event("e1", "en.wikipedia.org", "Alice", False), "p4"),
    (_event("c1", "en.wikipedia.org", "Canary", False, domain="canary"), "p5"),
    (b"this is not json", "p6"),
    (_event("e4", "commons.wikimedia.org", None, False), "p7"),
    (_event("e5", "de.wikipedia.org", "Carol", True), "p8"),
]
KNOWN_STATS = {
    "total": 5,
    "distinct_users": 3,
    "bots": 2,
    "non_bots": 3,
    "by_server_name": {"de.wikipedia.org": 2, "en.wikipedia.org": 2, "commons.wikimedia.org": 1},
}


class FakeSource:
    """Yield the given events, then end, raise or wait forever like the live stream."""

    def __init__(
        self, items: Iterable[RawEvent] = (), *, error: Exception | None = None, block: bool = True
    ) -> None:
        self._items = list(items)
        self._error = error
        self._block = block
        self.last_ids: list[str | None] = []
        #: Set once the consumer has taken every item (it asks for the next one after each).
        self.drained = asyncio.Event()

    async def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        self.last_ids.append(last_id)
        for item in self._items:
            yield item
        self.drained.set()
        if self._error is not None:
            raise self._error
        if self._block:
            await asyncio.Event().wait()


class BrokenStore(MemoryStore):
    """A memory store whose reads fail, like a database that went away."""

    async def snapshot(self) -> Stats:
        raise ConnectionError("backend at 10.0.0.7 refused the connection")


class RecordingStore(MemoryStore):
    """A memory store that remembers its lifecycle calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def open(self) -> None:
        self.calls.append("open")

    async def commit(self, batch: Batch) -> None:
        self.calls.append("commit")
        await super().commit(batch)

    async def close(self) -> None:
        self.calls.append("close")


class HangingStore(RecordingStore):
    """A store whose commits never return, like a database that stopped answering."""

    async def commit(self, batch: Batch) -> None:
        self.calls.append("commit")
        await asyncio.Event().wait()


class FailingOnceStore(RecordingStore):
    """A store whose first commit fails and whose retries wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = asyncio.Event()
        self.release = asyncio.Event()
        self.committed = asyncio.Event()

    async def commit(self, batch: Batch) -> None:
        if not self.failed.is_set():
            self.calls.append("commit-failed")
            self.failed.set()
            raise ConnectionError("backend at 10.0.0.7 refused the connection")
        await self.release.wait()
        await super().commit(batch)
        self.committed.set()


def _settings(**overrides: Any) -> Settings:
    return load_settings(environ={"WIKIPULSE_STORE": "memory"}, env_file=None, **overrides)


def _auth() -> Authenticator:
    return Authenticator(
        SecretStr(SECRET),
        {"alice": FAST.hash(PASSWORD)},
        issuer="wikipulse",
        audience="wikipulse-api",
        ttl_seconds=TTL,
        hasher=FAST,
    )


def _app(
    *,
    store: MemoryStore | None = None,
    source: FakeSource | None = None,
    state: ConsumerState | None = None,
    shutdown_grace: float = 10.0,
    clock: Callable[[], float] = time.time,
    **settings: Any,
) -> FastAPI:
    return build_app(
        _settings(jwt_secret=SECRET, **settings),
        store=store if store is not None else MemoryStore(),
        source=source if source is not None else FakeSource(),
        state=state,
        auth=_auth(),
        shutdown_grace=shutdown_grace,
        clock=clock,
    )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan around a client that calls it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wikipulse.test") as c:
            yield c


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(
    claims: dict[str, Any],
    *,
    alg: str = "HS256",
    key: str | None = SECRET,
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    """A token built by hand, so the tests do not trust the library they check."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b"" if key is None else hmac.new(key.encode(), signing_input, digest).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "iss": "wikipulse",
        "aud": "wikipulse-api",
    }
    for name, value in changes.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    return claims


def _tampered() -> str:
    header, _, signature = _jwt(_claims()).split(".")
    later = _b64(json.dumps(_claims(exp=int(time.time()) + 10**7)).encode())
    return f"{header}.{later}.{signature}"


# (Authorization header or None, expected challenge, expected body)
NO_CREDENTIALS = "Bearer"
BAD_TOKEN = 'Bearer error="invalid_token"'
REFUSED: dict[str, Callable[[], tuple[str | None, str, dict[str, str]]]] = {
    "no header": lambda: (None, NO_CREDENTIALS, MISSING),
    "scheme only": lambda: ("Bearer", NO_CREDENTIALS, MISSING),
    "token without scheme": lambda: (_jwt(_claims()), NO_CREDENTIALS, MISSING),
    "basic scheme": lambda: (
        f"Basic {_b64(b'alice:' + PASSWORD.encode())}",
        NO_CREDENTIALS,
        MISSING,
    ),
    "token scheme": lambda: (f"Token {_jwt(_claims())}", NO_CREDENTIALS, MISSING),
    "not a jwt": lambda: ("Bearer not-a-token", BAD_TOKEN, INVALID),
    "garbage segments": lambda: ("Bearer a.b.c", BAD_TOKEN, INVALID),
    "forged signature": lambda: (f"Bearer {_jwt(_claims(), key=OTHER_SECRET)}", BAD_TOKEN, INVALID),
    "expired": lambda: (
        f"Bearer {_jwt(_claims(iat=int(time.time()) - 3600, exp=int(time.time()) - 60))}",
        BAD_TOKEN,
        INVALID,
    ),
    "issued in the future": lambda: (
        f"Bearer {_jwt(_claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200))}",
        BAD_TOKEN,
        INVALID,
    ),
    "alg none": lambda: (f"Bearer {_jwt(_claims(), alg='none', key=None)}", BAD_TOKEN, INVALID),
    "alg none with signature": lambda: (
        f"Bearer {_jwt(_claims(), alg='none')}",
        BAD_TOKEN,
        INVALID,
    ),
    "HS512 with our secret": lambda: (
        f"Bearer {_jwt(_claims(), alg='HS512', digest=hashlib.sha512)}",
        BAD_TOKEN,
        INVALID,
    ),
    "RS256 header, HMAC with our secret": lambda: (
        f"Bearer {_jwt(_claims(), alg='RS256')}",
        BAD_TOKEN,
        INVALID,
    ),
    "wrong audience": lambda: (f"Bearer {_jwt(_claims(aud='other-api'))}", BAD_TOKEN, INVALID),
    "wrong issuer": lambda: (f"Bearer {_jwt(_claims(iss='someone-else'))}", BAD_TOKEN, INVALID),
    "missing exp": lambda: (f"Bearer {_jwt(_claims(exp=None))}", BAD_TOKEN, INVALID),
    "missing sub": lambda: (f"Bearer {_jwt(_claims(sub=None))}", BAD_TOKEN, INVALID),
    "missing iat": lambda: (f"Bearer {_jwt(_claims(iat=None))}", BAD_TOKEN, INVALID),
    "missing iss": lambda: (f"Bearer {_jwt(_claims(iss=None))}", BAD_TOKEN, INVALID),
    "missing aud": lambda: (f"Bearer {_jwt(_claims(aud=None))}", BAD_TOKEN, INVALID),
    "sub not a string": lambda: (f"Bearer {_jwt(_claims(sub=42))}", BAD_TOKEN, INVALID),
    "unknown user": lambda: (f"Bearer {_jwt(_claims(sub='mallory'))}", BAD_TOKEN, INVALID),
    "tampered payload": lambda: (f"Bearer {_tampered()}", BAD_TOKEN, INVALID),
}


async def test_login_with_json_returns_a_bearer_token() -> None:
    """JSON credentials get a token, its type and lifetime, marked not to be cached."""
    async with running(_app()) as client:
        response = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == TTL
        assert response.headers["cache-control"] == "no-store"
        stats = await client.get(
            "/stats", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert stats.status_code == 200


async def test_login_with_the_oauth2_password_form_returns_a_bearer_token() -> None:
    """The form the docs' Authorize dialog posts gets a token that opens /stats."""
    async with running(_app()) as client:
        form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
        response = await client.post("/login", data=form)
        assert response.status_code == 200
        assert response.json()["token_type"] == "bearer"
        token = response.json()["access_token"]
        stats = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
        assert stats.status_code == 200


@pytest.mark.parametrize("as_form", [False, True], ids=["json", "form"])
async def test_wrong_user_and_wrong_password_get_byte_identical_answers(as_form: bool) -> None:
    """An unknown user and a wrong password give the same status, body and headers."""
    async with running(_app()) as client:

        async def attempt(username: str, password: str) -> httpx.Response:
            credentials = {"username": username, "password": password}
            if as_form:
                return await client.post("/login", data=credentials)
            return await client.post("/login", json=credentials)

        wrong_user = await attempt("mallory", PASSWORD)
        wrong_password = await attempt("alice", "not the password")
    assert wrong_user.status_code == wrong_password.status_code == 401
    assert wrong_user.content == wrong_password.content
    assert wrong_user.content == b'{"detail":"incorrect username or password"}'
    assert wrong_user.headers.multi_items() == wrong_password.headers.multi_items()
    assert wrong_user.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (b'{"username": "alice"}', "application/json"),
        (b'{"username": "", "password": "x"}', "application/json"),
        (b'{"username": "alice", "password": 7}', "application/json"),
        (b"username=alice", "application/x-www-form-urlencoded"),
        (
            b"grant_type=client_credentials&username=alice&password=x",
            "application/x-www-form-urlencoded",
        ),
        (b"username=alice&password=%ff", "application/x-www-form-urlencoded"),
    ],
    ids=[
        "bad-json",
        "array",
        "no-password",
        "empty-user",
        "number",
        "form-no-password",
        "form-other-grant",
        "form-bad-utf8",
    ],
)
async def test_malformed_login_bodies_get_422(content: bytes, content_type: str) -> None:
    """A body that is not a user name and password is a 422 that echoes no input."""
    async with running(_app()) as client:
        response = await client.post(
            "/login", content=content, headers={"content-type": content_type}
        )
    assert response.status_code == 422
    assert "input" not in response.text
    assert all(error["loc"][0] == "body" for error in response.json()["detail"])


async def test_login_refuses_other_media_types_and_huge_bodies() -> None:
    """Plain text is a 415 and a body over 8 KiB is a 413, before any password check."""
    async with running(_app()) as client:
        text = await client.post(
            "/login", content=b"alice:pw", headers={"content-type": "text/plain"}
        )
        huge = await client.post("/login", json={"username": "alice", "password": "x" * 10_000})
    assert text.status_code == 415
    assert huge.status_code == 413
    assert huge.json() == {"detail": "request body too large"}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
async def test_stats_refuses_requests_without_a_valid_token(case: str) -> None:
    """Every missing, malformed, forged, confused, expired or mis-addressed token is a 401."""
    authorization, challenge, body = REFUSED[case]()
    headers = {} if authorization is None else {"Authorization": authorization}
    async with running(_app()) as client:
        response = await client.get("/stats", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    assert response.json() == body


async def test_a_hand_made_valid_token_is_accepted() -> None:
    """The token builder of the refusal cases makes tokens the API accepts when nothing is off."""
    async with running(_app()) as client:
        response = await client.get(
            "/stats", headers={"Authorization": f"Bearer {_jwt(_claims())}"}
        )
    assert response.status_code == 200


async def test_stats_counts_known_events_exactly() -> None:
    """Events fed through the consumer give the counts worked out by hand."""
    source = FakeSource(KNOWN_EVENTS, block=False)
    store = MemoryStore()
    app = _app(store=store, source=source)
    async with running(app) as client:
        await app.state.services.consumer_task  # the source ends, so the pipeline commits and stops
        response = await client.get(
            "/stats", headers={"Authorization": f"Bearer {await _token(client)}"}
        )
    assert response.status_code == 200
    assert response.json() == KNOWN_STATS
    assert list(response.json()["by_server_name"]) == [
        "de.wikipedia.org",
        "en.wikipedia.org",
        "commons.wikimedia.org",
    ]
    assert (await store.resume_point()).position == "p8"


async def test_stats_is_503_when_the_store_fails(caplog: pytest.LogCaptureFixture) -> None:
    """A store that cannot be read gives a clean 503, with the reason only in the log."""
    async with running(_app(store=BrokenStore())) as client:
        token = await _token(client)
        response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json() == {"detail": "the statistics store is unavailable; try again shortly"}
    assert response.headers["retry-after"] == "5"
    assert "10.0.0.7" in caplog.text


async def test_stats_is_503_before_the_store_is_open() -> None:
    """Outside the lifespan there is no store, so /stats says so instead of failing."""
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wikipulse.test") as client:
        token = await _token(client)
        response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json() == {"detail": "the statistics store is not open yet; try again shortly"}


async def test_status_answers_while_the_stream_is_unreachable() -> None:
    """/status needs no token and reports the consumer even when no event ever arrives."""
    state = ConsumerState(source_error="connect failed: timed out", reconnects=3)
    async with running(_app(state=state)) as client:
        response = await client.get("/status")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "store": "memory",
        "role": "serve",
        "consumer_running": True,
        "consumer": {
            "connected": False,
            "events_consumed": 0,
            "duplicates": 0,
            "invalid": 0,
            "canaries_dropped": 0,
            "reconnects": 3,
            "last_event_at": None,
            "last_event_dt": None,
            "lag_seconds": None,
            "last_error": "connect failed: timed out",
            "user_agent_refused": False,
            "store_ok": True,
            "oversized_events": 0,
            "redirects_refused": 0,
        },
        "lease": None,
    }


async def test_docs_and_openapi_offer_a_bearer_scheme() -> None:
    """/docs serves Swagger UI and the OpenAPI document declares bearer auth on /stats."""
    async with running(_app()) as client:
        docs = await client.get("/docs")
        openapi = await client.get("/openapi.json")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert openapi.status_code == 200
    spec = openapi.json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `POST /login`.",
    }
    assert spec["paths"]["/stats"]["get"]["security"] == [{"bearer": []}]
    assert set(spec["paths"]["/login"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
    }


async def test_lifespan_resumes_from_the_stored_position_and_closes_the_store() -> None:
    """The source is asked to resume after the stored position; the store opens then closes."""
    store = RecordingStore()
    await store.commit(Batch(position="p-41", touched=True))
    source = FakeSource()
    async with running(_app(store=store, source=source)) as client:
        assert (await client.get("/status")).status_code == 200
        async with asyncio.timeout(5):
            await source.drained.wait()
    assert source.last_ids == ["p-41"]
    assert store.calls == ["commit", "open", "close"]


async def test_shutdown_commits_the_last_batch() -> None:
    """Events still in the batch when the server stops are committed before the store closes."""
    store = RecordingStore()
    state = ConsumerState()
    source = FakeSource(KNOWN_EVENTS, block=True)
    # Batches large and slow enough that only shutdown commits them.
    app = _app(store=store, source=source, state=state, batch_max_events=1000, batch_max_ms=600_000)
    async with running(app):
        async with asyncio.timeout(5):
            await source.drained.wait()
        assert state.counters.counted == 5
        assert "commit" not in store.calls
    assert store.calls == ["open", "commit", "close"]
    assert (await store.snapshot()).to_dict() == KNOWN_STATS
    assert (await store.resume_point()).position == "p8"


async def test_shutdown_gives_up_on_a_store_that_hangs(caplog: pytest.LogCaptureFixture) -> None:
    """A store that never finishes a commit delays shutdown by two grace periods, not forever.

    The interrupted batch stays pending, so the final flush tries it once more.
    """
    store = HangingStore()
    source = FakeSource(KNOWN_EVENTS, block=True)
    app = _app(store=store, source=source, batch_max_ms=600_000, shutdown_grace=0.05)
    async with asyncio.timeout(5):
        async with running(app):
            await source.drained.wait()
    assert store.calls == ["open", "commit", "commit", "close"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the store did not accept the last batch within 0.05s; its events were not committed "
        "and will be read again from the last stored position"
    ]


async def test_a_crashed_consumer_is_logged_and_the_api_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error in the source is logged with its traceback and shown in /status."""
    state = ConsumerState()
    source = FakeSource(KNOWN_EVENTS[:2], error=RuntimeError("decoder exploded"))
    app = _app(source=source, state=state)
    async with running(app) as client:
        await app.state.services.consumer_task
        status = await client.get("/status")
        stats = await client.get(
            "/stats", headers={"Authorization": f"Bearer {await _token(client)}"}
        )
    assert state.last_error == "consumer stopped: RuntimeError: decoder exploded"
    crash = [
        r for r in caplog.records if r.name == "wikipulse.bootstrap" and r.levelno == logging.ERROR
    ]
    assert len(crash) == 1
    assert crash[0].exc_info is not None
    assert status.status_code == 200
    assert status.json()["consumer_running"] is False
    assert (
        status.json()["consumer"]["last_error"]
        == "consumer stopped: RuntimeError: decoder exploded"
    )
    assert stats.status_code == 200
    assert stats.json()["total"] == 2


async def test_generated_admin_password_works_and_nothing_secret_is_logged(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no secret and no users, build_app prints an admin password once that logs in."""
    with caplog.at_level(logging.DEBUG):
        app = build_app(_settings(), store=MemoryStore(), source=FakeSource())
        err = capsys.readouterr().err
        match = re.search(r"with password:\n\n {4}(\S+)\n", err)
        assert match is not None
        password = match.group(1)
        async with running(app) as client:
            login = await client.post("/login", data={"username": "admin", "password": password})
            token = login.json()["access_token"]
            stats = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert login.status_code == 200
    assert stats.status_code == 200
    assert err.count(password) == 1
    secret = app.state.services.auth.secret.get_secret_value()
    for value in (password, token, secret):
        assert value not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("WIKIPULSE_JWT_SECRET is not set" in message for message in warnings)


async def test_ready_is_503_before_the_store_is_open() -> None:
    """Outside the lifespan neither store nor consumer exists, and /ready names both."""
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wikipulse.test") as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "reasons": ["the statistics store is not open", "the stream consumer is not running"],
    }


async def test_ready_is_200_while_store_and_consumer_are_healthy() -> None:
    """With the store open and the consumer waiting for events, /ready says ready."""
    async with running(_app()) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reasons": []}


async def test_ready_is_503_after_a_failed_commit_until_a_commit_succeeds() -> None:
    """A failed commit makes /ready 503 with the reason; the retry that succeeds makes it 200."""
    store = FailingOnceStore()
    source = FakeSource(KNOWN_EVENTS[:1], block=True)
    async with running(_app(store=store, source=source, batch_max_events=1)) as client:
        async with asyncio.timeout(5):
            await store.failed.wait()
        failing = await client.get("/ready")
        store.release.set()
        async with asyncio.timeout(5):
            await store.committed.wait()
        recovered = await client.get("/ready")
    assert failing.status_code == 503
    assert failing.json() == {
        "ready": False,
        "reasons": ["the last commit to the statistics store failed"],
    }
    assert recovered.status_code == 200
    assert recovered.json() == {"ready": True, "reasons": []}


async def test_ready_is_503_once_the_consumer_has_stopped() -> None:
    """A consumer that crashed leaves /status at 200 but /ready at 503 with the reason."""
    source = FakeSource(KNOWN_EVENTS[:2], error=RuntimeError("decoder exploded"))
    app = _app(source=source)
    async with running(app) as client:
        await app.state.services.consumer_task
        ready = await client.get("/ready")
        status = await client.get("/status")
    assert status.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reasons": ["the stream consumer is not running"]}


def test_the_ready_probe_fails_where_the_liveness_probe_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Over HTTP, with no store open, `healthcheck` exits 0 but `healthcheck --ready` exits 1."""
    config = uvicorn.Config(_app(), host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        liveness = main(["healthcheck", "--url", f"{base}/status"])
        readiness = main(["healthcheck", "--ready", "--url", f"{base}/ready"])
    finally:
        server.should_exit = True
        thread.join(5)
    assert (liveness, readiness) == (0, 1)
    assert capsys.readouterr().err == (
        f"unhealthy: {base}/ready: HTTP 503 "
        '{"ready":false,"reasons":["the statistics store is not open",'
        '"the stream consumer is not running"]}\n'
    )


async def test_docs_reference_only_local_assets_that_are_served() -> None:
    """/docs loads Swagger UI from this service only: every src/href is local and answers 200."""
    async with running(_app()) as client:
        docs = await client.get("/docs")
        links = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", docs.text)
        fetched = {link: await client.get(link) for link in links}
        redoc = await client.get("/redoc")
        demo = await client.get("/docs/assets/index.html")
    assert docs.status_code == 200
    assert "://" not in docs.text
    assert sorted(links) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    ]
    assert {link: r.status_code for link, r in fetched.items()} == dict.fromkeys(links, 200)
    assert fetched["/docs/assets/swagger-ui-bundle.js"].content.startswith(b"/*!")
    assert redoc.status_code == 404
    assert demo.status_code == 404  # only the page's own assets are served
