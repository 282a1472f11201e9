"""A real HAProxy (Debian's /usr/sbin/haproxy) on loopback, in TCP mode in front of the servers a
test gives it, one frontend per backend, with its built-in Prometheus exporter
(`http-request use-service prometheus-exporter`) on a port of its own."""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from rainbowd_sandbox.procs import Process, ProcessError, free_port, wait_until

HAPROXY_ENV = "RAINBOWD_HAPROXY_BIN"
DEFAULT_BINARY = "/usr/sbin/haproxy"
_PORT_ATTEMPTS = 3
START_TIMEOUT = 30.0

Server = tuple[str, str]
"""A server's name (a pod's, for the haproxy preset) and its host:port."""


def _binary() -> Path:
    return Path(os.environ.get(HAPROXY_ENV) or shutil.which("haproxy") or DEFAULT_BINARY)


class HAProxy:
    """HAProxy proxying each backend of `backends` (name: servers) from a frontend port of its
    own (`port`), its exporter at `metrics_target` (/metrics)."""

    def __init__(self, backends: Mapping[str, Sequence[Server]], *, workdir: Path) -> None:
        self.backends = {name: list(servers) for name, servers in backends.items()}
        self.workdir = workdir
        self.binary = _binary()
        self._ports: dict[str, int] = {}
        self._metrics_port = 0
        self._proc: Process | None = None

    @property
    def metrics_target(self) -> str:
        return f"127.0.0.1:{self._metrics_port}"

    def port(self, backend: str) -> int:
        return self._ports[backend]

    def _config(self) -> str:
        lines = [
            "global",
            "    maxconn 256",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            # Held connections stay open for the whole test.
            "    timeout client 1h",
            "    timeout server 1h",
            "frontend prometheus",
            "    mode http",
            f"    bind 127.0.0.1:{self._metrics_port}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
        ]
        for name, servers in self.backends.items():
            lines += [
                f"frontend fe_{name}",
                f"    bind 127.0.0.1:{self._ports[name]}",
                f"    default_backend {name}",
                f"backend {name}",
                *(f"    server {server} {address}" for server, address in servers),
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> HAProxy:
        if not os.access(self.binary, os.X_OK):
            raise ProcessError(
                f"haproxy not found at {self.binary}; install it: apt-get install haproxy "
                "(scripts/setup does)"
            )
        # A free port can be taken before HAProxy binds it: pick others and try again.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._metrics_port = free_port()
            self._ports = {name: free_port() for name in self.backends}
            config = self.workdir / "haproxy.cfg"
            config.write_text(self._config())
            self._proc = Process(
                "haproxy",
                [str(self.binary), "-db", "-f", str(config)],
                log_path=self.workdir / "haproxy.log",
                cwd=self.workdir,
            )
            self._proc.start()
            try:
                wait_until(
                    self._ready, timeout=START_TIMEOUT, what="serving /metrics", process=self._proc
                )
                return self
            except ProcessError as exc:
                self._proc.stop()
                if attempt == _PORT_ATTEMPTS or "cannot bind" not in str(exc).lower():
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool | None:
        url = f"http://{self.metrics_target}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read().decode()
        return True if resp.status == 200 and "haproxy_server_current_sessions" in body else None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
