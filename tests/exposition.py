"""A scrape target serving whatever Prometheus text exposition a test or benchmark sets: a real
HTTP server on loopback, for series no demo_app process can export (NaN, negative gauges, pod
labels, tens of thousands of pods at once)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class Exposition:
    """`text` is served at /metrics; replace it at any time (`set`)."""

    def __init__(self, text: str = "") -> None:
        self._body = text.encode()
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer._body
                outer.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set(self, text: str) -> None:
        self._body = text.encode()

    def __enter__(self) -> Exposition:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def gauge(name: str, series: list[tuple[dict[str, str], str]]) -> str:
    """A gauge family in the text format: `[({"pod": "p1"}, "3"), ...]`."""
    lines = [f"# TYPE {name} gauge"]
    for labels, value in series:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value}")
    return "\n".join(lines) + "\n"
