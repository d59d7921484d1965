"""The dashboard page and its files: served from the package, strict headers, no CDN, small."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from tests.test_api import _app, running
from wikipulse.dashboard import SECURITY_HEADERS, STATIC_FILES

pytestmark = pytest.mark.anyio

#: Every element the browser tests and the issue name, by `data-testid`.
TEST_IDS = {
    "username",
    "password",
    "login",
    "login-error",
    "total",
    "distinct-users",
    "bots",
    "non-bots",
    "rate-chart",
    "top-wikis",
    "top-pages",
    "top-users",
    "consumer",
}


class _Collector(HTMLParser):
    """Collects the page's test ids and the URLs it loads."""

    def __init__(self) -> None:
        super().__init__()
        self.test_ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the test id and the URL of a tag, if it has them."""
        values = dict(attrs)
        if values.get("data-testid"):
            self.test_ids.add(str(values["data-testid"]))
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))


async def test_the_page_is_served_with_a_strict_policy_and_names_its_elements() -> None:
    """`GET /` is HTML with the CSP and friends, every test id, and only local assets."""
    async with running(_app()) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = _Collector()
    page.feed(response.text)
    assert page.test_ids >= TEST_IDS
    assert page.urls
    assert all(url.startswith("/static/") for url in page.urls)
    assert {url.removeprefix("/static/") for url in page.urls} <= set(STATIC_FILES)
    assert "<script>" not in response.text  # no inline code: the policy would refuse it


@pytest.mark.parametrize("name", sorted(STATIC_FILES))
async def test_each_static_file_is_served_with_its_type_and_revalidated(name: str) -> None:
    """A listed file comes with its media type and an ETag; asking again with it gives 304."""
    async with running(_app()) as client:
        first = await client.get(f"/static/{name}")
        again = await client.get(
            f"/static/{name}", headers={"If-None-Match": first.headers["etag"]}
        )
    assert first.status_code == 200
    assert first.headers["content-type"] == STATIC_FILES[name]
    assert first.content == resources.files("wikipulse").joinpath("static", name).read_bytes()
    assert first.headers["x-content-type-options"] == "nosniff"
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize("name", ["index.html", "../api.py", "nope.js", "%2e%2e%2fapi.py"])
async def test_anything_else_under_static_is_404(name: str) -> None:
    """Only the listed files are served: no directory walk, not even the page itself."""
    async with running(_app()) as client:
        response = await client.get(f"/static/{name}")
    assert response.status_code == 404


def test_the_assets_load_nothing_from_elsewhere_and_stay_small() -> None:
    """No CDN or other origin in any asset, the JS under 300 KB, the token never in a URL."""
    static = resources.files("wikipulse").joinpath("static")
    texts = {name: static.joinpath(name).read_text() for name in [*STATIC_FILES, "index.html"]}
    for name, text in texts.items():
        origins = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert origins == set(), name
    script = texts["dashboard.js"]
    assert len(script.encode()) < 300 * 1024
    assert "Authorization: `Bearer ${token}`" in script
    assert not re.search(r"[?&](token|access_token)=", script)
    assert "localStorage" not in script  # sessionStorage: gone with the tab


async def test_the_page_and_its_files_are_left_out_of_the_api_docs() -> None:
    """The OpenAPI document lists /stats/live but not the page routes."""
    async with running(_app()) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/stats/live" in paths
    assert "/" not in paths
    assert "/static/{name}" not in paths


def test_the_static_files_are_package_data() -> None:
    """pyproject ships `static/*` with the package, so a wheel install serves the page too."""
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = project["tool"]["setuptools"]["package-data"]["wikipulse"]
    static = root / "src" / "wikipulse" / "static"
    for name in [*STATIC_FILES, "index.html"]:
        assert any((static / name).relative_to(static.parent).match(p) for p in patterns), name
