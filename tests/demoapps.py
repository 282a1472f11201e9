"""Runs demo_app as a real child process on loopback and learns the ports it bound.

The app binds port 0 and logs the ports it got, so parallel tests never race for a free port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0


class DemoApp:
    def __init__(
        self,
        color: str,
        *,
        workdir: Path,
        app: str | None = "rainbow-deploys",
        namespace: str | None = "default",
        interval: float = 0.2,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.color = color
        self.app = app
        self.namespace = namespace
        self.annotations_file = workdir / f"annotations-{color}"
        self.log_path = workdir / f"demo-{color}-{time.monotonic_ns()}.log"
        # None leaves the flag out, for the environment to supply.
        named = [("--app", app), ("--namespace", namespace)]
        self.argv = [
            sys.executable,
            "-m",
            "demo_app",
            *(part for flag, value in named if value is not None for part in (flag, value)),
            "--color",
            color,
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--tcp-port",
            "0",
            "--interval",
            str(interval),
            "--annotations-file",
            str(self.annotations_file),
            *extra,
        ]
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.tcp_port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def target(self) -> str:
        """host:port of /metrics, as a Prometheus target."""
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> DemoApp:
        with self.log_path.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
            )
        listening = self.wait_for_log("demo app listening")
        self.http_port = int(listening["http_port"])
        self.tcp_port = int(listening["tcp_port"])
        return self

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def wait_for_log(self, msg: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.log_lines():
                if entry.get("msg") == msg:
                    return entry
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"demo app exited ({self.popen.returncode}) before {msg!r}:\n"
                    + self.log_path.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {msg!r} from the demo app within {timeout}s")
            time.sleep(0.05)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def close(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
