"""docs/design.md's "Adding a rule" stays true of the code: every file it names exists, and
every name it tells a newcomer to extend is still where it says."""

from __future__ import annotations

import re
from pathlib import Path

from rainbowd.core import notes, reporting
from rainbowd.core.planner import resolve, rules
from rainbowd.core.policy import knobs

ROOT = Path(__file__).resolve().parents[2]


def _walkthrough() -> str:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    start = text.index("## Adding a rule")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_file_the_walkthrough_names_exists() -> None:
    named = set(
        re.findall(r"`((?:rainbowd|tests|config|k8s|scripts|docs)/[\w./-]+)`", _walkthrough())
    )
    assert named, "the walk-through names no file"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_places_it_names_are_there() -> None:
    assert hasattr(knobs, "KNOBS") and hasattr(knobs, "Value")
    assert hasattr(notes, "Why") and hasattr(notes, "HeldBy")
    assert hasattr(reporting, "_words") and hasattr(reporting, "_held_words")
    assert hasattr(resolve, "HOLDING_RULES") and hasattr(resolve, "settle")
    assert hasattr(resolve, "HoldingRule") and hasattr(rules, "max_retired_age")
    assert hasattr(resolve, "force") and hasattr(resolve, "decide_cleanups")
    assert hasattr(rules, "Decision") and hasattr(rules, "decision_of")
