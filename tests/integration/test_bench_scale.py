"""The scale benchmark's whole harness at a tiny size, so it cannot rot: both controllers, every
phase, every figure present. Asserts what must hold at any size, never a time."""

from __future__ import annotations

from tests.bench import bench_scale


def test_the_scale_bench_runs_end_to_end_at_a_tiny_size() -> None:
    # Cycles twice a second; Prometheus scrapes once a second (the sandbox's shortest).
    result = bench_scale.run(8, 1, interval=0.5, scrape=1.0)
    assert result["deployments"] == 8
    rows = bench_scale.rows(result)
    assert all(r is not None for _, r, _ in rows[1:])
    for name in ("rainbowd", "baseline"):
        figures = result[name]
        # Every Deployment stamped, and each controller reacted to the switch and the drain.
        assert figures["first_convergence_writes"] >= 8
        assert figures["switch_to_retired_s"] >= 0
        assert figures["drained_to_scaled_s"] >= 0
    steady = result["rainbowd"]["steady"]
    # The watch caches: no LIST or GET from rainbowd in a steady cycle; one query per cycle.
    assert "list" not in steady["apiserver_requests_per_cycle"]
    assert "get" not in steady["apiserver_requests_per_cycle"]
    assert steady["prometheus_queries_per_cycle"] >= 1
    # The baseline LISTs Deployments and Services every cycle.
    assert result["baseline"]["steady"]["apiserver_requests_per_cycle"]["list"] >= 2
    # The summary answer: two series per color (its sum and its pod count) for its 8 colors,
    # where the raw shape has one per pod.
    answer = result["answer"]
    assert answer["per_pod"]["series"] == result["series"]
    assert answer["summary"]["series"] == 2 * 8
