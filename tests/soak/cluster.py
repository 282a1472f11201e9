"""The soak's control plane: the test one, with etcd compacted every few seconds and watches
without a timeout of their own ending early, and an audit log read as it grows."""

from __future__ import annotations

import json
from typing import Any

from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.procs import Process

COMPACTION_INTERVAL = "5s"
"""The apiserver compacts etcd this often (5m by default): a watch resumed from a version older
than that meets 410 Gone, as it would after hours of quiet in a real cluster."""
MIN_REQUEST_TIMEOUT = "15"
"""Seconds; a watch that names no timeout of its own is ended after 15-30 s (30-60 min by
default)."""
APISERVER_ARGS = (
    f"--etcd-compaction-interval={COMPACTION_INTERVAL}",
    f"--min-request-timeout={MIN_REQUEST_TIMEOUT}",
    # Services' and ConfigMaps' watches go to etcd itself, not the watch cache: resumes after a
    # compaction meet etcd's 410, while Deployments' watches keep the cache's bookmarks.
    "--watch-cache-sizes=services#0,configmaps#0",
)


class SoakControlPlane(ControlPlane):
    """`audit_events()` keeps rainbowd's Deployment writes only, read incrementally: the whole
    log of a 30-minute soak is too large to parse again for every judgement."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._audit_offset = 0
        self._audit_kept: list[dict[str, Any]] = []

    def _process(self, name: str, args: list[str]) -> Process:
        if name == "kube-apiserver":
            args = [*args, *APISERVER_ARGS]
        return super()._process(name, args)

    def audit_events(self) -> list[dict[str, Any]]:
        try:
            if self.audit_log.stat().st_size < self._audit_offset:
                self._audit_offset = 0  # rotated: the new file from its start
            with self.audit_log.open("rb") as f:
                f.seek(self._audit_offset)
                data = f.read()
        except FileNotFoundError:
            return list(self._audit_kept)
        end = data.rfind(b"\n") + 1
        self._audit_offset += end
        for line in data[:end].splitlines():
            if b'"userAgent":"rainbowd/' not in line or b'"deployments"' not in line:
                continue
            event = json.loads(line)
            if (event.get("objectRef") or {}).get("resource") == "deployments":
                self._audit_kept.append(event)
        return list(self._audit_kept)
