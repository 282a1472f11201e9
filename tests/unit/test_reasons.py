"""The one table per Reason (rainbowd/core/model.py REASONS): what the executor's Events say."""

from __future__ import annotations

import pytest

from rainbowd.core.model import REASONS, Action, ActionKind, Reason, Severity
from rainbowd.kube.executing import ActionOutcome, event_reason, event_type


def _action(kind: ActionKind, reason: Reason) -> Action:
    return Action(kind, "ns", "web-blue", "web", "blue", "uid", "1", reason, "message")


@pytest.mark.parametrize(
    ("kind", "reason", "outcome", "expected"),
    [
        (ActionKind.ANNOTATE, Reason.OBSERVED_LIVE, ActionOutcome.OK, ("MarkedLive", "Normal")),
        (
            ActionKind.ANNOTATE,
            Reason.OBSERVED_LIVE,
            ActionOutcome.ERROR,
            ("MarkLiveFailed", "Warning"),
        ),
        (
            ActionKind.ANNOTATE,
            Reason.MALFORMED_ANNOTATION,
            ActionOutcome.OK,
            ("MalformedAnnotation", "Warning"),
        ),
        (
            ActionKind.ANNOTATE,
            Reason.DRAIN_RESET,
            ActionOutcome.CONFLICT,
            ("MarkDrainResetConflict", "Warning"),
        ),
        (ActionKind.SCALE, Reason.DRAINED, ActionOutcome.OK, ("ScaledDown", "Normal")),
        (ActionKind.SCALE, Reason.MAX_COLORS, ActionOutcome.ERROR, ("ScaleDownFailed", "Warning")),
        (ActionKind.DELETE, Reason.KEEP_SCALED_DOWN, ActionOutcome.OK, ("Deleted", "Normal")),
        (
            ActionKind.DELETE,
            Reason.KEEP_SCALED_DOWN,
            ActionOutcome.GONE,
            ("AlreadyDeleted", "Normal"),
        ),
        # A stamp reason riding on a scale-down takes the scale-down's Event.
        (ActionKind.SCALE, Reason.DRAIN_STARTED, ActionOutcome.OK, ("ScaledDown", "Normal")),
    ],
)
def test_event_of_an_action(
    kind: ActionKind, reason: Reason, outcome: ActionOutcome, expected: tuple[str, str]
) -> None:
    action = _action(kind, reason)
    assert (event_reason(action, outcome), event_type(action, outcome)) == expected


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_words_and_camel_case_events(reason: Reason) -> None:
    info = REASONS[reason]
    assert info.words and info.words == info.words.strip()
    if info.event is not None:
        assert all(name[:1].isupper() and name.isalnum() for name in info.event)
    # Only annotation stamps carry their own Event; a Warning on success is such a stamp.
    assert info.severity is Severity.NORMAL or info.event is not None
