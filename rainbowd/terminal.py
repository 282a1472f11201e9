"""Plans drawn for a terminal with rich: the plan table with each color shown as a swatch of its
own color where the terminal has colors, redrawn in place for `rainbowd status --watch` and the
sandbox. Cluster values go in as rich Text, never as markup, so a "[bold]" in a note stays text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence

from rich.color import Color, ColorParseError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.style import Style
from rich.table import Table
from rich.text import Text

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import Plan, State
from rainbowd.core.reporting import COLUMNS, plan_footer, plan_rows

STATE_STYLES = {
    State.LIVE: "bold green",
    State.PENDING: "blue",
    State.RETIRED: "yellow",
    State.DRAINING: "yellow",
    State.DRAINED: "cyan",
    State.SCALED_DOWN: "dim",
    State.PROTECTED: "magenta",
    State.UNKNOWN_CONNECTIONS: "bold red",
}
# The sandbox's table: one app in one namespace, so those columns and the long note go.
COMPACT_COLUMNS = (
    "COLOR",
    "STATE",
    "REPLICAS",
    "CONNECTIONS",
    "RETIRED-FOR",
    "ETA",
    "ACTION",
    "REASON",
)
_HEX = re.compile(r"[0-9a-fA-F]{6}|[0-9a-fA-F]{3}")


def swatch(color: str) -> Text:
    """Two cells painted in the color (its hex digits, or a color name the terminal knows),
    then the value as text: the text is what counts, the paint is for the eye."""
    paint = f"#{color}" if _HEX.fullmatch(color) else color
    text = Text()
    try:
        text.append("  ", style=Style(bgcolor=Color.parse(paint)))
    except ColorParseError:
        text.append("??", style="dim")
    text.append(" ")
    text.append(color)
    return text


def plan_table(
    plan: Plan,
    *,
    forecasts: Mapping[ColorKey, ColorForecast] | None = None,
    compact: bool = False,
) -> Table:
    columns = COMPACT_COLUMNS if compact else COLUMNS
    picked = [COLUMNS.index(name) for name in columns]
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name != "NOTE")
    state_at, color_at = COLUMNS.index("STATE"), COLUMNS.index("COLOR")
    for row in plan_rows(plan, forecasts=forecasts):
        cells: list[Text] = []
        for i in picked:
            if i == color_at:
                cells.append(swatch(row[i]))
            elif i == state_at:
                cells.append(Text(row[i], style=STATE_STYLES.get(State(row[i]), "")))
            else:
                cells.append(Text(row[i]))
        table.add_row(*cells)
    return table


def plan_view(
    plan: Plan | None,
    *,
    forecasts: Mapping[ColorKey, ColorForecast] | None = None,
    header: Sequence[str] = (),
    compact: bool = False,
) -> RenderableType:
    """Header lines, the table, then the summary, blocked apps and warnings."""
    parts: list[RenderableType] = [Text(line) for line in header]
    if header:
        parts.append(Text())
    if plan is None:
        parts.append(Text("no plan yet", style="dim"))
        return Group(*parts)
    parts.append(plan_table(plan, forecasts=forecasts, compact=compact))
    parts.append(Text())
    for line in plan_footer(plan):
        style = "bold red" if line.startswith("blocked:") else ""
        style = "yellow" if line.startswith("warning:") else style
        parts.append(Text(line, style=style))
    return Group(*parts)


def redraw(
    console: Console,
    view: Callable[[], RenderableType],
    *,
    interval: float,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Draws `view()` in place every `interval` seconds until `until()` or Ctrl-C."""
    with Live(view(), console=console, auto_refresh=False, transient=False) as live:
        try:
            while not until():
                time.sleep(interval)
                live.update(view(), refresh=True)
        except KeyboardInterrupt:
            pass
