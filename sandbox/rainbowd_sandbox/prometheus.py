"""A real Prometheus server on loopback (Debian's /usr/bin/prometheus) for tests and the sandbox.

Scrape targets come from file_sd files this module rewrites, so they change without a restart;
`query` and `wait_for` read the HTTP API synchronously.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from rainbowd.logs import get_logger
from rainbowd_sandbox.procs import Process, ProcessError, free_port, make_data_dir, wait_until

log = get_logger(__name__)

PROMETHEUS_ENV = "RAINBOWD_PROMETHEUS_BIN"
DEFAULT_BINARY = "/usr/bin/prometheus"
DEFAULT_JOB = "targets"
_PORT_ATTEMPTS = 3

Target = tuple[str, Mapping[str, str]]


class PrometheusError(RuntimeError):
    """Prometheus answered with an error, or cannot be started."""


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


def _binary() -> Path:
    """$RAINBOWD_PROMETHEUS_BIN, else `prometheus` on PATH, else where Debian installs it."""
    return Path(os.environ.get(PROMETHEUS_ENV) or shutil.which("prometheus") or DEFAULT_BINARY)


class PrometheusServer:
    """Prometheus scraping the file_sd targets given to `set_targets`, one job per name.

    `scrape_interval` is in seconds (1 for tests: a value shows up within about two seconds).
    `stop()` and `start()` keep the port and the TSDB, for outage tests.
    """

    NAME = "prometheus"

    def __init__(
        self,
        *,
        scrape_interval: float = 1.0,
        data_dir: Path | None = None,
        binary: Path | None = None,
        start_timeout: float = 60.0,
        host: str = "127.0.0.1",
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[Path] = (),
        external_labels: Mapping[str, str] | None = None,
    ) -> None:
        """`host` is the listen address (a real node's bridge, for pods to query it);
        `scrape_configs` are more jobs as Prometheus takes them (kubernetes_sd_configs...);
        `rule_files` are rule files Prometheus evaluates (changed with `set_rule_files`);
        `external_labels` name this Prometheus to a Thanos sidecar."""
        self.host = host
        self.external_labels = dict(external_labels or {})
        self.rule_files = list(rule_files)
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.scrape_interval = scrape_interval
        self.binary = binary if binary is not None else _binary()
        self.start_timeout = start_timeout
        self._own_data_dir = data_dir is None
        self._data_dir_arg = data_dir
        self._data_dir: Path | None = None
        self._port = 0
        self._jobs: dict[str, list[Target]] = {DEFAULT_JOB: []}
        self._proc: Process | None = None

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise PrometheusError("prometheus not started")
        return self._data_dir

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.running() else None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts (or starts again, same port and data) and waits for /-/ready."""
        if self._proc is not None and self._proc.running():
            return
        if not os.access(self.binary, os.X_OK):
            raise PrometheusError(
                f"prometheus not found at {self.binary}; install it: apt-get install prometheus"
            )
        if self._data_dir is not None:
            self._start_process()
            return
        self._data_dir = make_data_dir(self._data_dir_arg, "rainbowd-prometheus-")
        for job, targets in self._jobs.items():
            self._write_targets(job, targets)
        # A free port can be taken by another process before Prometheus binds it (tests side by
        # side, or two runs of the suite): pick another and try again rather than fail.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._port = free_port()
            self._write_config()
            try:
                self._start_process()
                return
            except ProcessError as exc:
                if attempt == _PORT_ATTEMPTS or "address already in use" not in str(exc):
                    raise
                log.warning("port taken, retrying with another", attempt=attempt)

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.data_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address={self.host}:{self._port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    READY_PATH = "/-/ready"
    FLAGS_PATH = "/api/v1/status/flags"

    def _ready(self) -> bool | None:
        """Ready, and ours, not another server that holds the port this one failed to bind."""
        with urllib.request.urlopen(self.url + self.READY_PATH, timeout=2) as resp:
            if resp.status != 200:
                return None
        with urllib.request.urlopen(self.url + self.FLAGS_PATH, timeout=2) as resp:
            flags = resp.read().decode()
        return True if self._ours(flags) else None

    def _ours(self, flags: str) -> bool:
        """Whether the flags the server answers name this one's data folder."""
        data = json.loads(flags).get("data", {})
        return bool(data.get("storage.tsdb.path") == str(self.data_dir / "tsdb"))

    def _start_process(self) -> None:
        began = time.monotonic()
        name = self.NAME
        self._proc = Process(
            name, self._command(), log_path=self.data_dir / f"{name}.log", cwd=self.data_dir
        )
        self._proc.start()
        ready = self._ready
        try:
            wait_until(ready, timeout=self.start_timeout, what="ready", process=self._proc)
        except ProcessError:
            self._proc.stop()
            raise
        log.info(f"{name} started", url=self.url, seconds=round(time.monotonic() - began, 2))

    def stop(self) -> None:
        """Stops the server but keeps its port, config and TSDB for `start()`."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def close(self) -> None:
        """Stops the server and removes the data folder it created."""
        self.stop()
        if self._data_dir is not None and self._own_data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None

    # -- targets ------------------------------------------------------------------------------

    def set_targets(self, targets: Sequence[Target], *, job: str = DEFAULT_JOB) -> None:
        """Replaces the targets of `job`: `[("127.0.0.1:8000", {"app": "chat"}), ...]`.

        An existing job picks the change up through file_sd without a restart; a new job name
        rewrites the configuration and reloads it. Either way Prometheus hands discovered targets
        to its scrapers in batches every 5 seconds (fixed in its discovery manager), so poll with
        `wait_for` rather than expecting the change at the next scrape.
        """
        new_job = job not in self._jobs
        self._jobs[job] = [(address, dict(labels)) for address, labels in targets]
        if self._data_dir is None:
            return
        self._write_targets(job, self._jobs[job])
        if new_job:
            self._write_config()
            if self._proc is not None and self._proc.running():
                self.reload()

    def set_rule_files(self, rule_files: Sequence[Path]) -> None:
        """Replaces the rule files and reloads a running Prometheus."""
        self.rule_files = list(rule_files)
        if self._data_dir is None:
            return
        self._write_config()
        if self._proc is not None and self._proc.running():
            self.reload()

    def reload(self) -> None:
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def _targets_file(self, job: str) -> Path:
        return self.data_dir / f"targets-{job}.json"

    def _write_targets(self, job: str, targets: Sequence[Target]) -> None:
        groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
        path = self._targets_file(job)
        # Written aside and renamed, so the file watcher never reads a half-written file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)

    def _write_config(self) -> None:
        interval = f"{self.scrape_interval:g}s"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            }
            | ({"external_labels": self.external_labels} if self.external_labels else {}),
            "scrape_configs": [
                {
                    "job_name": job,
                    "file_sd_configs": [
                        {"files": [str(self._targets_file(job))], "refresh_interval": interval}
                    ],
                }
                for job in self._jobs
            ]
            + self.scrape_configs,
            "rule_files": [str(path) for path in self.rule_files],
        }
        path = self.data_dir / "prometheus.yml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(path)

    # -- queries ------------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError on an error status."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PrometheusError(f"{path}: {body.get('error', exc)}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query; a vector's samples, or one unlabelled sample for a scalar."""
        data = self.api("query", {"query": expr})
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [
                Sample(
                    labels=item["metric"],
                    value=float(item["value"][1]),
                    timestamp=float(item["value"][0]),
                )
                for item in result
            ]
        if kind == "scalar":
            return [Sample(labels={}, value=float(result[1]), timestamp=float(result[0]))]
        raise PrometheusError(f"query {expr!r} returned a {kind}, not a vector or scalar")

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[Sample]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[Sample]:
        """Polls `query(expr)` until `predicate(samples)` holds; returns those samples."""
        last: list[Sample] = []

        def check() -> list[Sample] | None:
            nonlocal last
            last = self.query(expr)
            return last if predicate(last) else None

        try:
            return wait_until(check, timeout=timeout, what=f"matching {expr!r}", interval=0.2)
        except ProcessError as exc:
            raise PrometheusError(f"{exc}; last result: {last}") from None

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as /api/v1/targets reports them (health, lastError, labels)."""
        data = self.api("targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return active
