"""A long life of `Planner`: namespaces come and go by the thousand under one policy, and what
the planner remembers between cycles stays the size of the cluster it sees now (found by the
soak, `make soak`)."""

from __future__ import annotations

from datetime import timedelta

from rainbowd.core.planner import Planner
from rainbowd.daemon.sizes import structure_sizes
from tests.unit.strategies import NOW, deployment, policy, service, snapshot

CYCLES = 300


def test_the_rules_memo_forgets_namespaces_that_went_away() -> None:
    planner = Planner()
    rules = policy()
    for n in range(CYCLES):
        namespace = f"preview-{n}"
        snap = snapshot(
            [deployment("aaaaaa", namespace=namespace), deployment("bbbbbb", namespace=namespace)],
            [service({"app": "rainbow-deploys", "color": "bbbbbb"}, namespace=namespace)],
            now=NOW + timedelta(seconds=n),
        )
        planner.plan(snap, rules, snap.now)
    sizes = structure_sizes(planner)
    # One namespace in the last snapshot: one rule answer and one namespace memo.
    assert sizes["rules.matcher.cache"] == 1, sizes
    assert sizes["namespaces"] == 1, sizes
