"""The sandbox's terminal: a compact table of the colors kept live at the bottom while the story
lines (and, with --verbose, the logs) scroll above it. Only on a terminal; piped, the output is the
story lines alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

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


class LogFollower:
    """With --verbose, the log files of the sandbox's processes (the control plane's and
    Prometheus's) followed onto a stream as they grow, each line headed by its file's name:
    a thread reading every `interval` seconds from where it left off, files that appear later
    included. A line still being written is held until its end comes."""

    def __init__(
        self,
        patterns: Iterable[Path],
        write: Callable[[str], object],
        *,
        interval: float = 0.5,
    ) -> None:
        """`patterns`: files or globs (`folder/*.log`); `write` gets whole lines."""
        self.patterns = tuple(patterns)
        self.write = write
        self.interval = interval
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox logs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops following after a last read, so nothing written before the stop is lost."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()
        self.read()

    def files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.patterns:
            found.extend(sorted(pattern.parent.glob(pattern.name)))
        return found

    def read(self) -> None:
        """Whatever the files gained since the last read, line by line."""
        for path in self.files():
            try:
                with path.open("rb") as file:
                    file.seek(self._offsets.get(path, 0))
                    data = file.read()
            except OSError:
                continue  # gone, or not readable yet: tried again next time
            if not data:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            *lines, rest = (self._partial.pop(path, b"") + data).split(b"\n")
            if rest:
                self._partial[path] = rest
            for line in lines:
                self.write(f"[{path.stem}] {line.decode(errors='replace')}\n")
