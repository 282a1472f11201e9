"""The soak, short: the same churn as `make soak` for a few minutes, failing on a wrongful action
or on a long-lived structure of rainbowd past a generous threshold (no timed assertion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.running import soak

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

MINUTES = 1.5
INTERVAL = 0.1
"""Seconds between rainbowd's cycles: half `make soak`'s, so a structure that grows per cycle
passes its limit within the run's last leader's tenure (60% of the run)."""
STEP_PAUSE = (0.2, 0.8)
"""Seconds between churn steps: shorter than `make soak`'s, so the shorter run takes about as
many steps as 2.5 minutes at its pace did."""
SAMPLE_EVERY = 10.0


async def test_a_short_soak_acts_rightly_and_keeps_its_structures_bounded(tmp_path: Path) -> None:
    # The logs (rainbowd's, the demo apps', each namespace's witness timeline) stay in tmp_path.
    outcome = await soak(
        MINUTES,
        sample_every=SAMPLE_EVERY,
        interval=INTERVAL,
        step_pause=STEP_PAUSE,
        keep=tmp_path,
    )
    print("\n".join(outcome.report))
    assert not outcome.wrongful, "wrongful actions:\n" + "\n".join(outcome.wrongful)
    assert not outcome.over_limit, "structures past their limit:\n" + "\n".join(outcome.over_limit)
    # The run did what a soak is for: cycles ran and rainbowd acted (or the figures mean little).
    assert outcome.tally.get("cycles ok", 0) > 0, outcome.report
    assert outcome.actions > 0, outcome.report
