"""A real VictoriaMetrics (single node, Debian's /usr/bin/victoria-metrics) on loopback: a
Prometheus-compatible backend scraping the same file_sd targets through its Prometheus-compatible
scrape configuration, answering the same query API. It evaluates no rules (vmalert does that)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rainbowd_sandbox.prometheus import PrometheusServer

VICTORIA_METRICS_ENV = "RAINBOWD_VICTORIA_METRICS_BIN"
DEFAULT_BINARY = "/usr/bin/victoria-metrics"


def _binary() -> Path:
    return Path(
        os.environ.get(VICTORIA_METRICS_ENV) or shutil.which("victoria-metrics") or DEFAULT_BINARY
    )


class VictoriaMetricsServer(PrometheusServer):
    """VictoriaMetrics scraping the targets given to `set_targets`, as PrometheusServer does."""

    NAME = "victoria-metrics"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("binary", _binary())
        super().__init__(**kwargs)

    def _command(self) -> list[str]:
        interval = f"{self.scrape_interval:g}s"
        return [
            str(self.binary),
            f"-promscrape.config={self.data_dir / 'prometheus.yml'}",
            # The configuration's rule_files are Prometheus' own: not an error here.
            "-promscrape.config.strictParse=false",
            f"-promscrape.configCheckInterval={interval}",
            f"-promscrape.fileSDCheckInterval={interval}",
            f"-storageDataPath={self.data_dir / 'vmdata'}",
            f"-httpListenAddr={self.host}:{self.port}",
            # A sample is queryable as soon as it is scraped, as in Prometheus (the default
            # holds the last 30 s back), and no answer is served from a cache.
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    READY_PATH = "/health"
    FLAGS_PATH = "/flags"

    def _ours(self, flags: str) -> bool:
        return str(self.data_dir / "vmdata") in flags

    def reload(self) -> None:
        """VictoriaMetrics rereads its scrape configuration every scrape interval by itself."""
