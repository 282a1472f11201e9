"""The sandbox's live table: the daemon's latest plan, compact, kept at the bottom of a terminal
while printed story lines land above it; nothing at all when the output is not a terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from rainbowd.core.model import Plan
from rainbowd.sandbox.terminal import LiveTable
from tests.unit.test_status_command import sample_plan


def test_story_lines_print_above_the_table_which_follows_the_plan() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=120)
    plans: list[Plan | None] = [None]
    table = LiveTable(lambda: plans[-1], "http://127.0.0.1:1234/", console=console)
    table.start()
    try:
        console.print("story: 1. deploy color #aaaaaa")
        plans.append(sample_plan())
        console.print("story: 2. open a TCP connection")
    finally:
        table.stop()
    raw = out.getvalue()
    assert "\x1b[48;2;187;187;187m" in raw  # the swatch of #bbbbbb
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "rainbowd, live: http://127.0.0.1:1234/" in text
    assert "no plan yet" in text
    assert text.index("story: 1.") < text.rindex("bbbbbb")
    assert "NOTE" not in text and "NAMESPACE" not in text  # compact


def test_nothing_is_drawn_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    table = LiveTable(sample_plan, "http://x/", console=Console(file=out, force_terminal=False))
    table.start()
    table.stop()
    assert out.getvalue() == ""
