"""`/docs` without the internet: Swagger UI's assets served from an installed package.

FastAPI's default `/docs` page loads Swagger UI from a CDN, which a machine without internet
access (or a browser behind a strict proxy) cannot reach. The assets come from the
`swagger-ui-bundle-v2` package instead (Swagger UI 5, Apache-2.0, its licence shipped with
the wheel), served under `/docs/assets/`; the page references local URLs only. ReDoc, which
has no such package, is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["ASSETS_PATH", "DOCS_PATH", "install_docs"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from local assets; build the app with `docs_url=None`."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
