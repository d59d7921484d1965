"""The dashboard in a real headless Chromium: log in, see `/stats`, watch it change, fail to log in.

The app runs on a real socket (uvicorn in a thread) with the memory store, fed by a queue the
test controls. The chart and the top lists come from the real `/stats/timeseries` and
`/stats/top` of the memory store; `tests/support/served.FakeWindows` counts the same events
independently (its routes are registered after the real ones, so they only answer where the
real ones are missing), and one test checks that the page explains a store without windows.

Chromium is Debian's (`/usr/bin/chromium`); without it these tests skip, unless `CI=true`,
where they fail. `WIKIPULSE_SCREENSHOT=docs/dashboard.png` also writes the README's picture.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.counting import expected_stats
from tests.support.served import (
    PASSWORD,
    CountersOnly,
    FakeWindows,
    QueueSource,
    make_app,
    serving,
    with_fake_windows,
)
from wikipulse.generate import GeneratorOptions, write_file

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

#: Debian's Chromium; another build can be named by WIKIPULSE_TEST_CHROMIUM.
CHROMIUM = Path(os.environ.get("WIKIPULSE_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, headless=True, timeout=60_000
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no storage shared between tests) on a laptop-sized screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def _lines(tmp_path: Path) -> list[bytes]:
    """The last hour's generated events (2.5 a second, hot pages), the same but for the time."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=62)
    options = GeneratorOptions(9000, seed=7, canaries=2, start=start, rate=2.5, page_skew=4)
    return write_file(options, tmp_path / "hour.ndjson").read_bytes().splitlines()


def _feed(source: QueueSource, windows: FakeWindows, lines: list[bytes]) -> None:
    windows.note(lines)
    source.feed(lines)


def _stats(base: str, total: int | None = None) -> dict[str, Any]:
    """`/stats` once it counts `total` events (or at once)."""
    with httpx.Client(base_url=base, timeout=10) as http:
        login = http.post("/login", json={"username": "alice", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for _ in range(200):
            body: dict[str, Any] = http.get("/stats", headers=auth).json()
            if total is None or body["total"] == total:
                return body
            http.get("/status")  # a short pause that also proves the service answers
        raise AssertionError(f"/stats never reached {total}: {body}")


def _log_in(page: Page, base: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/")
    page.get_by_test_id("username").fill("alice")
    page.get_by_test_id("password").fill(password)
    page.get_by_test_id("login").click()


def _expect_totals(page: Page, stats: dict[str, Any]) -> None:
    expect(page.get_by_test_id("total")).to_have_text(str(stats["total"]))
    expect(page.get_by_test_id("distinct-users")).to_have_text(str(stats["distinct_users"]))
    expect(page.get_by_test_id("bots")).to_have_text(str(stats["bots"]))
    expect(page.get_by_test_id("non-bots")).to_have_text(str(stats["non_bots"]))


def test_the_dashboard_shows_stats_and_follows_them_without_reload(
    page: Page, tmp_path: Path
) -> None:
    """Logged in through the form, the page equals /stats, draws, lists, and keeps up."""
    lines = _lines(tmp_path)
    first, later = lines[:8000], lines[8000:]
    source, windows = QueueSource(), FakeWindows()
    _feed(source, windows, first)
    with serving(with_fake_windows(make_app(source), windows)) as base:
        expected = expected_stats(first)
        assert _stats(base, total=expected["total"]) == expected
        _log_in(page, base)
        _expect_totals(page, expected)
        assert "token" not in page.url
        assert page.evaluate("sessionStorage.getItem('wikipulse.token')").count(".") == 2

        chart = page.get_by_test_id("rate-chart")
        expect(chart).to_be_visible()
        expect(chart.locator("rect.bar-humans")).to_have_count(60)
        heights = chart.locator("rect").evaluate_all("rs => rs.map(r => r.height.baseVal.value)")
        assert sum(heights) > 0
        assert sum(h > 0 for h in heights) >= 60  # every minute of the hour has events

        until = windows.timeseries()["until"]  # the page asks for the 15 minutes before it
        since = (datetime.fromisoformat(until) - timedelta(minutes=15)).isoformat()
        top = windows.top("server_name", since, until, 10)["items"]
        wikis = page.get_by_test_id("top-wikis").locator("li")
        expect(wikis).to_have_count(10)
        expect(wikis.first).to_contain_text(top[0]["server_name"])
        expect(wikis.first).to_contain_text(str(top[0]["count"]))
        assert wikis.all_inner_texts()[9].split() == [top[9]["server_name"], str(top[9]["count"])]
        expect(page.get_by_test_id("top-pages").locator("li")).to_have_count(10)
        expect(page.get_by_test_id("top-users").locator("li")).to_have_count(10)
        consumer = page.get_by_test_id("consumer")
        expect(consumer).to_contain_text("connected")
        expect(consumer).to_contain_text("none")  # no error

        page.evaluate("window.notReloaded = true")
        _feed(source, windows, later)
        after = expected_stats(lines)
        assert _stats(base, total=after["total"]) == after
        _expect_totals(page, after)
        assert page.evaluate("window.notReloaded") is True
        newest = windows.timeseries()["buckets"][-1]  # pushed as `event: bucket`
        title = f"{newest['start'][11:16]} UTC: {newest['total']} events, {newest['bots']} by bots"
        expect(chart.locator("g title").last).to_have_text(title)
        expect(consumer).to_contain_text(str(after["total"]))

        page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
        _save_for_the_readme(tmp_path / "dashboard.png")
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
        expect(wikis.first.locator(".name")).to_be_visible()

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_test_id("username")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0


def _save_for_the_readme(shot: Path) -> None:
    target = os.environ.get("WIKIPULSE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_a_wrong_password_shows_an_error_and_keeps_no_token(page: Page) -> None:
    """A refused login shows why in `login-error` and stores nothing."""
    with serving(make_app(QueueSource())) as base:
        _log_in(page, base, password="not the password")
        error = page.get_by_test_id("login-error")
        expect(error).to_be_visible()
        expect(error).to_have_text("Incorrect user name or password.")
        assert page.evaluate("sessionStorage.length") == 0
        expect(page.get_by_test_id("total")).to_be_hidden()


def test_without_time_windows_the_page_says_so_and_still_shows_totals(
    page: Page, tmp_path: Path
) -> None:
    """With a store that keeps no windows (501), the chart and top lists give way to notes."""
    source, lines = QueueSource(), _lines(tmp_path)[:500]
    source.feed(lines)
    with serving(make_app(source, store=CountersOnly())) as base:
        stats = _stats(base, total=expected_stats(lines)["total"])
        _log_in(page, base)
        _expect_totals(page, stats)
        expect(page.get_by_test_id("rate-note")).to_contain_text("no time windows")
        expect(page.get_by_test_id("rate-chart")).to_be_hidden()
        expect(page.get_by_test_id("top-note")).to_contain_text("no time windows")
        expect(page.get_by_test_id("top-wikis")).to_be_hidden()


def test_an_expired_session_asks_to_log_in_again(page: Page) -> None:
    """The stream's `expired` event brings the form back with a message and forgets the token."""
    with serving(make_app(QueueSource(), ttl_seconds=2)) as base:
        _log_in(page, base)
        expect(page.get_by_test_id("total")).to_have_text("0")
        error = page.get_by_test_id("login-error")
        expect(error).to_have_text("Your session has expired; please log in again.", timeout=8000)
        assert page.evaluate("sessionStorage.length") == 0
        expect(page.get_by_test_id("total")).to_be_hidden()
