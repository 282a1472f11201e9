"""The soak's figures: rainbowd's process (RSS, fds, threads) and its own gauges (asyncio tasks,
structure sizes, counters) sampled over the run, each figure's slope over the second half."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

STRUCTURE = "rainbowd_structure_entries"
COUNTERS = {
    "cycles ok": ("rainbowd_reconciles_total", {"result": "ok"}),
    "cycles failed": ("rainbowd_reconciles_total", {"result": "error"}),
    "actions": ("rainbowd_actions_total", {}),
    "relists": ("rainbowd_informer_relists_total", {}),
    "watches": ("rainbowd_informer_watches_total", {}),
    "watch errors": ("rainbowd_informer_errors_total", {}),
    "policy reloads": ("rainbowd_policy_reloads_total", {}),
    "policy invalid": ("rainbowd_policy_reloads_total", {"result": "invalid"}),
}


@dataclass
class Sample:
    at: float  # seconds since the soak began
    values: dict[str, float]


@dataclass
class Series:
    """One rainbowd process's samples."""

    identity: str
    started: float
    samples: list[Sample] = field(default_factory=list)
    ended: float | None = None


def process_figures(pid: int) -> dict[str, float]:
    """RSS (MiB), open fds and threads of `pid`, from /proc; empty once it is gone."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return {}
    out = {"fds": float(fds)}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            out["rss MiB"] = int(value.split()[0]) / 1024
        elif key == "Threads":
            out["threads"] = float(value.strip())
    return out


def metrics_figures(text: str) -> dict[str, float]:
    """The gauges and counters the soak follows, from rainbowd's /metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == STRUCTURE:
                out[f"entries {s.labels['structure']}"] = s.value
            elif s.name == "rainbowd_asyncio_tasks":
                out["asyncio tasks"] = s.value
            elif s.name == "rainbowd_leader":
                out["leader"] = s.value
            for label, (name, labels) in COUNTERS.items():
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    out[label] = out.get(label, 0.0) + s.value
    return out


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per hour; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 3600.0


def noise(points: Sequence[tuple[float, float]]) -> float:
    """Standard deviation of the values around their mean."""
    if len(points) < 2:
        return 0.0
    mean = sum(v for _, v in points) / len(points)
    return math.sqrt(sum((v - mean) ** 2 for _, v in points) / (len(points) - 1))


@dataclass(frozen=True)
class Row:
    figure: str
    first: float
    last: float
    peak: float
    slope: float | None  # per hour, over the second half
    drift: float | None  # the slope over the second half's span, in units of the noise
    flat: bool


GAUGES = ("rss MiB", "fds", "threads", "asyncio tasks")


def rows(series: Series, *, half: float) -> list[Row]:
    """One row per gauge and structure: the slope over the samples at or after `half`."""
    names = sorted(
        {k for s in series.samples for k in s.values if k in GAUGES or k.startswith("entries ")},
        key=lambda k: (k not in GAUGES, GAUGES.index(k) if k in GAUGES else 0, k),
    )
    out = []
    for name in names:
        points = [(s.at, s.values[name]) for s in series.samples if name in s.values]
        late = [(t, v) for t, v in points if t >= half]
        slope = slope_per_hour(late)
        spread = noise(late)
        span = (late[-1][0] - late[0][0]) if late else 0.0
        change = None if slope is None else slope * span / 3600.0
        drift = None if change is None else (change / spread if spread > 0 else 0.0)
        # Flat within noise: the fitted change over the half is within twice the spread around
        # the mean, or less than one entry (a structure that did not move).
        flat = change is None or abs(change) <= max(2 * spread, 1.0)
        out.append(
            Row(
                figure=name,
                first=points[0][1],
                last=points[-1][1],
                peak=max(v for _, v in points),
                slope=slope,
                drift=drift,
                flat=flat,
            )
        )
    return out


def table(rows_: Iterable[Row]) -> list[str]:
    lines = [f"{'figure':<72} {'first':>9} {'last':>9} {'peak':>9} {'slope/h':>10}  flat"]
    for r in rows_:
        slope = "-" if r.slope is None else f"{r.slope:+.1f}"
        lines.append(
            f"{r.figure[:72]:<72} {r.first:>9.1f} {r.last:>9.1f} {r.peak:>9.1f} {slope:>10}  "
            f"{'yes' if r.flat else 'NO'}"
        )
    return lines


def counters(series: Iterable[Series]) -> dict[str, float]:
    """Each counter summed over the processes (each process's last sample)."""
    out: dict[str, float] = {}
    for s in series:
        if not s.samples:
            continue
        last: dict[str, float] = {}
        for sample in s.samples:
            last.update(sample.values)
        for label in COUNTERS:
            out[label] = out.get(label, 0.0) + last.get(label, 0.0)
    return out


def over_limit(series: Series, limits: Mapping[str, float], default: float) -> list[str]:
    """Structures whose peak passed their limit (`limits` by the figure's last part, else
    `default`)."""
    out = []
    for r in rows(series, half=0.0):
        if not r.figure.startswith("entries "):
            continue
        limit = next((v for k, v in limits.items() if r.figure.endswith(k)), default)
        if r.peak > limit:
            out.append(f"{r.figure}: {r.peak:g} entries, past {limit:g} ({series.identity})")
    return out
