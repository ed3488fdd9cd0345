"""`incident page serve`: the built site over HTTP on 127.0.0.1 (aiohttp), for a preview."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from incident.inbound.server import serve

__all__ = ["make_app", "serve"]

TYPES = {".atom": "application/atom+xml", ".rss": "application/rss+xml",
         ".json": "application/json", ".html": "text/html"}


def make_app(root: Path) -> web.Application:
    """Serve the files under `root` (a directory path ending in / gets its index.html); a
    file is opened afresh on each request, so a rebuild shows at once."""
    base = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if path == "" or path.endswith("/"):
            path += "index.html"
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise web.HTTPNotFound()
        kind = TYPES.get(target.suffix, "application/octet-stream")
        return web.Response(body=target.read_bytes(), content_type=kind,
                            charset="utf-8" if kind != "application/octet-stream" else None,
                            headers={"Cache-Control": "no-cache"})

    app = web.Application()
    app.router.add_get("/{path:.*}", handle)
    return app
