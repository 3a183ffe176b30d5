"""The playground: a small web app, shipped in this package, to chat with a flow and watch its state machine.

Its files live in ``api/playground/`` (plain HTML, CSS and JavaScript modules: no build step, no
CDN). The page talks to the public HTTP API only; it learns the API's prefix from the HTML it is
served, so it works under any ``prefix`` and behind a ``root_path``.
"""

from __future__ import annotations

from html import escape
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from ._errors import ApiError

PLAYGROUND_PATH = "/playground"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything comes from this server: no CDN, no fonts, nothing fetched elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _files() -> tuple[str, dict[str, bytes]]:
    folder = resources.files(__package__ or "api") / "playground"
    index = (folder / "index.html").read_text("utf-8")
    assets = {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _MEDIA_TYPES)
    }
    return index, assets


def install_playground(app: FastAPI, prefix: str) -> None:
    """Serve the playground at ``/`` (when the API has a prefix) and at ``/playground/``.

    Args:
        app: the app serving the API.
        prefix: the API's prefix (``""`` leaves ``/`` to the API's own route).
    """
    index, assets = _files()

    async def page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        values = {
            "api_prefix": root + prefix,
            "assets": root + PLAYGROUND_PATH,
            "health": root + "/health",
            "docs": root + app.docs_url if app.docs_url else "",
        }
        html = index
        for name, value in values.items():
            html = html.replace("{{" + name + "}}", escape(value))
        return HTMLResponse(html, headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})

    async def asset(name: str) -> Response:
        content = assets.get(name)
        if content is None:
            raise ApiError(
                404,
                "not_found",
                f"the playground has no file {name!r}; open {PLAYGROUND_PATH}/ for the page",
                known_files=sorted(assets),
            )
        media_type = next(value for suffix, value in _MEDIA_TYPES.items() if name.endswith(suffix))
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    if prefix:
        app.add_api_route("/", page, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(PLAYGROUND_PATH + "/", page, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(PLAYGROUND_PATH + "/{name}", asset, methods=["GET", "HEAD"], include_in_schema=False)
