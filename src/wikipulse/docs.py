"""`/docs` without the internet: Swagger UI's assets served from an installed package.

FastAPI's default `/docs` page loads Swagger UI from a CDN, which a machine without internet
access (or a browser behind a strict proxy) cannot reach. The assets come from the
`swagger-ui-bundle-v2` package instead (Swagger UI 5, Apache-2.0, its licence shipped with
the wheel), served under `/docs/assets/`; the page references local URLs only. ReDoc, which
has no such package, is not offered.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

__all__ = ["ASSETS_PATH", "DOCS_PATH", "install_docs"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
#: The only files served: what the page loads (the package also has demo pages).
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_ASSETS_DIR = Path(str(swagger_ui_path))


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from local assets; build the app with `docs_url=None`."""

    @app.get(f"{ASSETS_PATH}/{{name}}", include_in_schema=False)
    async def swagger_asset(name: str) -> FileResponse:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
        return FileResponse(
            _ASSETS_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

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
