"""The live rainbow page: static assets shipped as package data and the read-only routes that
serve them on the daemon's HTTP listener. The page draws itself from /status in the browser;
nothing here renders cluster values, so nothing here can forget to escape one.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# The only files served, by name: a request never reaches the file system with a path it chose.
ASSETS = {
    "page.js": "text/javascript",
    "page.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The page runs its own script and style only, talks only to its own origin, and cannot be
# framed: even a value that slipped past escaping could not run or load anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> bytes:
    """One of the page's files, read from the installed package."""
    return (resources.files(__package__) / "static" / name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=asset("index.html"),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(body=asset(name), content_type=content_type, headers=SECURITY_HEADERS)


def add_routes(app: web.Application) -> None:
    """`/` and `/ui/<asset>`, GET (and HEAD) only: the page changes nothing."""
    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", static)
