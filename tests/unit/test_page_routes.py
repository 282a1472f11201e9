"""The page's routes on the daemon's HTTP server: the assets come from the installed package,
nothing else is served from disk, nothing but GET is answered, and the page may run only its
own script."""

from __future__ import annotations

import asyncio

import aiohttp

from rainbowd.http import HttpServer
from tests.statusserver import FixedStatus, serving


async def test_the_page_and_its_assets_are_served_read_only() -> None:
    async with serving(FixedStatus({"identity": "x"})) as server, aiohttp.ClientSession() as s:
        async with s.get(server.url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
            policy = resp.headers["Content-Security-Policy"]
        assert '<script src="/ui/page.js"' in page
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "connect-src 'self'" in policy
        for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
            async with s.get(f"{server.url}/ui/{name}") as resp:
                assert resp.status == 200 and resp.content_type == kind
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert len(await resp.read()) > 100
        for path in ("/ui/index.html", "/ui/..%2f__init__.py", "/ui/%2e%2e/http.py", "/ui/nope"):
            async with s.get(server.url + path) as resp:
                assert resp.status == 404, path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/ui/page.js", "/status"):
                async with s.request(method, server.url + path) as resp:
                    assert resp.status == 405, (method, path)


async def test_the_server_is_listening_only_once_its_port_is_known() -> None:
    """Given port 0, the server reports itself listening only with the port the OS picked: a
    test (or anyone) reading its URL while it starts must never be handed port 0."""
    server = HttpServer(FixedStatus({}), host="127.0.0.1", port=0)
    starting = asyncio.create_task(server.start())
    seen: list[int] = []
    try:
        while not starting.done():
            if server.listening:
                seen.append(server.port)
            await asyncio.sleep(0)
        await starting
        assert server.listening and server.port != 0
        assert 0 not in seen, f"listening with port 0 while starting ({len(seen)} looks)"
    finally:
        await server.stop()


def test_the_script_never_parses_cluster_values_as_html() -> None:
    """The page builds elements and sets text; the one way to parse HTML stays out of it."""
    from rainbowd.web import asset

    script = asset("page.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no web font, no framework download: every file the page names is its own."""
    import re

    from rainbowd.web import ASSETS, asset

    for name in ("index.html", *ASSETS):
        text = asset(name).decode()
        # The one absolute URL is SVG's namespace name, which is never fetched.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text, name
    page = asset("index.html").decode()
    named = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert named and all(
        url in ("/status", "/metrics") or url.removeprefix("/ui/") in ASSETS for url in named
    ), named
