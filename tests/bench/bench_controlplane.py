"""Benchmark: how long the loopback sandbox takes to come up with the binaries already built.

Times RAINBOWD_BENCH_STARTS (default 3) cold starts of etcd + kube-apiserver, the extra full
components with a Ready fake Node, an apiserver restart, and a Prometheus start; prints medians.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    runs = int(os.environ.get("RAINBOWD_BENCH_STARTS", "3"))
    results: dict[str, list[float]] = {
        "etcd + kube-apiserver ready": [],
        "+ controller-manager, scheduler, kwok, Node Ready": [],
        "kube-apiserver restart": [],
        "stop everything": [],
        "prometheus ready": [],
    }
    for _ in range(runs):
        cp = ControlPlane()
        try:
            results["etcd + kube-apiserver ready"].append(_timed(cp.start))
            results["+ controller-manager, scheduler, kwok, Node Ready"].append(
                _timed(cp.start_full)
            )
            results["kube-apiserver restart"].append(_timed(cp.restart_apiserver))
        finally:
            results["stop everything"].append(_timed(cp.stop))
        prom = PrometheusServer()
        try:
            results["prometheus ready"].append(_timed(prom.start))
        finally:
            prom.close()
    for name, values in results.items():
        print(
            f"{name:52} median {statistics.median(values):6.2f} s"
            f"  (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )


if __name__ == "__main__":
    main()
