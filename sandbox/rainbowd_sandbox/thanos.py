"""Thanos Query over a Thanos sidecar on a real Prometheus, on loopback: the query API of a
horizontally scaled setup, answering from the Prometheus the sidecar fronts. Thanos is built from
its Go module at the version tests/cluster/thanos pins (`tests/cluster/thanos/build`, cached as
the control plane is)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rainbowd.logs import get_logger
from rainbowd_sandbox.procs import Process, ProcessError, free_port, wait_until
from rainbowd_sandbox.prometheus import DEFAULT_JOB, PrometheusError, PrometheusServer, Target

log = get_logger(__name__)

THANOS_ENV = "RAINBOWD_THANOS_BIN"
_ROOT = Path(__file__).resolve().parents[2]
BUILD = _ROOT / "tests" / "cluster" / "thanos" / "build"


def thanos_binary() -> Path:
    """$RAINBOWD_THANOS_BIN, else the cached build (built first if missing)."""
    given = os.environ.get(THANOS_ENV)
    if given:
        return Path(given)
    if not os.access(BUILD, os.X_OK):
        raise PrometheusError(f"thanos: no build script at {BUILD}")
    done = subprocess.run(
        [str(BUILD), "--print-bin"], capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise PrometheusError(f"thanos: {BUILD} failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip())


class ThanosQuery:
    """A Prometheus (as PrometheusServer, labelled for the sidecar), a Thanos sidecar on it and a
    Thanos Query over the sidecar: `url` is Thanos Query's; targets and rule files go to the
    Prometheus."""

    def __init__(self, *, scrape_interval: float = 1.0, binary: Path | None = None) -> None:
        self.prometheus = PrometheusServer(
            scrape_interval=scrape_interval, external_labels={"replica": "a"}
        )
        self.binary = binary
        self._sidecar: Process | None = None
        self._query: Process | None = None
        self._grpc = self._http = self._query_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._query_port}"

    def start(self) -> None:
        """Starts (or starts again, same ports) the three and waits until Query answers from
        the sidecar."""
        if self.binary is None:
            self.binary = thanos_binary()
        began = time.monotonic()
        self.prometheus.start()
        if not self._grpc:
            self._grpc, self._http, self._query_port = free_port(), free_port(), free_port()
        data = self.prometheus.data_dir
        self._sidecar = Process(
            "thanos-sidecar",
            [
                str(self.binary),
                "sidecar",
                f"--prometheus.url={self.prometheus.url}",
                f"--tsdb.path={data / 'tsdb'}",
                f"--grpc-address=127.0.0.1:{self._grpc}",
                f"--http-address=127.0.0.1:{self._http}",
                "--log.level=warn",
            ],
            log_path=data / "thanos-sidecar.log",
            cwd=data,
        )
        self._query = Process(
            "thanos-query",
            [
                str(self.binary),
                "query",
                f"--endpoint=127.0.0.1:{self._grpc}",
                f"--http-address=127.0.0.1:{self._query_port}",
                f"--grpc-address=127.0.0.1:{free_port()}",
                "--query.replica-label=replica",
                "--log.level=warn",
            ],
            log_path=data / "thanos-query.log",
            cwd=data,
        )
        for proc in (self._sidecar, self._query):
            proc.start()

        def ready() -> bool | None:
            # Query lists the sidecar among its stores, without an error, once it answers.
            with urllib.request.urlopen(self.url + "/api/v1/stores", timeout=2) as resp:
                stores = json.load(resp).get("data") or {}
            return (
                any(
                    store.get("name") == f"127.0.0.1:{self._grpc}"
                    and store.get("lastError") is None
                    for kind in stores.values()
                    for store in kind
                )
                or None
            )

        try:
            wait_until(ready, timeout=120, what="thanos query ready", process=self._query)
        except ProcessError:
            self.stop()
            raise
        log.info("thanos query started", url=self.url, seconds=round(time.monotonic() - began, 2))

    def stop(self) -> None:
        """Stops all three, keeping ports and data for `start()`."""
        for proc in (self._query, self._sidecar):
            if proc is not None:
                proc.stop()
        self._query = self._sidecar = None
        self.prometheus.stop()

    def close(self) -> None:
        self.stop()
        self.prometheus.close()

    def set_targets(self, targets: Sequence[Target], *, job: str = DEFAULT_JOB) -> None:
        self.prometheus.set_targets(targets, job=job)

    def set_rule_files(self, rule_files: Sequence[Path]) -> None:
        self.prometheus.set_rule_files(rule_files)
