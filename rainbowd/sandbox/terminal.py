"""The sandbox's terminal: a compact table of the colors kept live at the bottom while the story
lines (and, with --verbose, the logs) scroll above it. Only on a terminal; piped, the output is the
story lines alone.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.rule import Rule
from rich.text import Text

from rainbowd.core.model import Plan
from rainbowd.terminal import plan_view

# Twice a second: a cycle is one second in the sandbox, and the table is cheap to draw.
REFRESHES_PER_SECOND = 2.0


class _Table:
    """Drawn afresh from the daemon's latest plan at every refresh."""

    def __init__(self, plan: Callable[[], Plan | None], page_url: str) -> None:
        self.plan = plan
        self.page_url = page_url

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Group(
            Rule(Text(f"rainbowd, live: {self.page_url}"), style="dim", align="left"),
            plan_view(self.plan(), compact=True),
        )


class LiveTable:
    def __init__(
        self, plan: Callable[[], Plan | None], page_url: str, console: Console | None = None
    ) -> None:
        self.console = console or Console()
        self._live: Live | None = None
        self._table = _Table(plan, page_url)

    def start(self) -> None:
        if not self.console.is_terminal or self._live is not None:
            return
        # print() from the story and the sandbox lands above the table instead of through it.
        self._live = Live(
            self._table,
            console=self.console,
            refresh_per_second=REFRESHES_PER_SECOND,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
