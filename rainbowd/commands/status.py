"""`rainbowd status`: asks a running daemon for its /status and prints the plan table (or JSON).

The table is rendered by the same reporting code as `rainbowd plan`, from a Plan rebuilt out of
the JSON document, so a plan reads the same whether computed here or fetched from a daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from rainbowd.core.forecast import ColorForecast, ColorKey, Forecast, Method, NoEstimate
from rainbowd.core.model import (
    Action,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Plan,
    Reason,
    State,
)
from rainbowd.core.objects import parse_time
from rainbowd.core.reporting import render_plan_table

DEFAULT_URL = "http://127.0.0.1:8080"
# A daemon answers /status from memory; anything slower than this is not going to answer.
TIMEOUT = 10.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show a running daemon's last plan",
        description="Fetch /status from a running `rainbowd run` and print its last plan.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("RAINBOWD_URL", DEFAULT_URL),
        help=f"the daemon's HTTP address ({DEFAULT_URL}) [RAINBOWD_URL]",
    )
    parser.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="table or json"
    )
    parser.add_argument(
        "--watch",
        "-w",
        nargs="?",
        type=_interval,
        const=2.0,
        metavar="SECONDS",
        help="redraw the table in place every SECONDS (2) until Ctrl-C; plain text when piped",
    )
    parser.set_defaults(func=run)


class StatusUnavailable(Exception):
    """/status could not be read or is not a JSON object; the message says why."""


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0.2 to 3600 seconds, got {text}")
    return value


def read_status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            document = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise StatusUnavailable(f"cannot read {url}: {reason}") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{url} did not answer a JSON object")
    return document


def run(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/status"
    if args.watch is not None and args.output == "table":
        return watch(url, interval=args.watch)
    try:
        document = read_status(url)
    except StatusUnavailable as exc:
        print(f"rainbowd status: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(document, indent=2))
        return 0
    try:
        sys.stdout.write(render_status(document))
    except (KeyError, TypeError, ValueError) as exc:
        print(f"rainbowd status: unexpected /status document: {exc!r}", file=sys.stderr)
        return 1
    return 0


def render_status(document: Mapping[str, Any]) -> str:
    """A few header lines about the daemon, then the plan table."""
    text = "\n".join(status_header(document)) + "\n\n"
    plan = document.get("plan")
    if plan is None:
        return text + "no plan yet\n"
    return text + render_plan_table(
        plan_from_document(plan), forecasts=forecasts_from_document(plan)
    )


def status_header(document: Mapping[str, Any]) -> list[str]:
    """The lines about the daemon itself: identity, leader, policy, the last cycle."""
    policy = document.get("policy") or {}
    cycle = document.get("cycle")
    lines = [
        f"daemon:  {document.get('identity', '?')}"
        f"  leader={_yes(document.get('leader'))}  ready={_yes(document.get('ready'))}",
        f"policy:  {policy.get('source', '?')}  valid={_yes(policy.get('valid'))}",
    ]
    for error in policy.get("errors") or []:
        lines.append(f"  error: {error}")
    if cycle:
        lines.append(
            f"cycle:   #{cycle.get('number')} at {cycle.get('started_at')}"
            f"  took {float(cycle.get('duration_seconds') or 0) * 1000:.0f}ms"
            f"  ok={_yes(cycle.get('ok'))}"
            + (f"  error: {cycle['error']}" if cycle.get("error") else "")
        )
        for query, error in (cycle.get("prometheus_errors") or {}).items():
            lines.append(f"  prometheus: {query}: {error}")
    else:
        lines.append("cycle:   none yet")
    return lines


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _connections(doc: Mapping[str, Any]) -> Connections:
    return Connections(
        value=doc.get("value"), series=doc.get("series"), cause=doc.get("cause") or ""
    )


def plan_from_document(doc: Mapping[str, Any]) -> Plan:
    """The inverse of reporting.plan_to_document, as far as the table needs it."""
    now = parse_time(doc["now"])
    apps = []
    for app in doc.get("apps") or []:
        namespace, app_name = app["namespace"], app["app"]
        colors = []
        for c in app.get("colors") or []:
            retired_for = c.get("retiredFor")
            # The document's times are whole seconds; retiredFor is exact, so keep the age.
            retired_at = None if retired_for is None else now - timedelta(seconds=retired_for)
            actions = tuple(
                Action(
                    kind=ActionKind(a["kind"]),
                    namespace=namespace,
                    name=c["deployment"],
                    app=app_name,
                    color=c["color"],
                    uid=a.get("uid") or "",
                    resource_version=a.get("resourceVersion") or "",
                    reason=Reason(a["reason"]),
                    message=a.get("message") or "",
                    annotations=a.get("annotations") or {},
                    connections=a.get("connections"),
                )
                for a in c.get("actions") or []
            )
            colors.append(
                ColorPlan(
                    namespace=namespace,
                    app=app_name,
                    color=c["color"],
                    name=c["deployment"],
                    state=State(c["state"]),
                    rule=c.get("rule"),
                    replicas=int(c["replicas"]),
                    ready_replicas=int(c.get("readyReplicas") or 0),
                    connections=_connections(c.get("connections") or {}),
                    created_at=parse_time(c["createdAt"]),
                    retired_at=retired_at,
                    drained_since=None
                    if c.get("drainedSince") is None
                    else parse_time(c["drainedSince"]),
                    note=c.get("note") or "",
                    actions=actions,
                    held=None if c.get("held") is None else Reason(c["held"]),
                )
            )
        apps.append(
            AppPlan(
                namespace=namespace,
                app=app_name,
                rule=app.get("rule"),
                blocked=None if app.get("blocked") is None else BlockReason(app["blocked"]),
                message=app.get("message") or "",
                colors=tuple(colors),
            )
        )
    return Plan(
        now=now,
        apps=tuple(apps),
        dry_run=bool(doc.get("dryRun")),
        paused=bool(doc.get("paused")),
        warnings=tuple(doc.get("warnings") or ()),
    )


def forecasts_from_document(doc: Mapping[str, Any]) -> dict[ColorKey, ColorForecast]:
    """Each color's `forecast` of a plan document, as far as the table's ETA column needs it."""
    now = parse_time(doc["now"]).timestamp()
    out: dict[ColorKey, ColorForecast] = {}
    for app in doc.get("apps") or []:
        for c in app.get("colors") or []:
            f = c.get("forecast")
            if not f:
                continue
            seconds = f.get("etaSeconds")
            deadline = f.get("deadlineAt")
            out[(app["namespace"], app["app"], c["color"])] = ColorForecast(
                forecast=Forecast(
                    now=now,
                    points=int(f.get("points") or 0),
                    eta=None if seconds is None else now + float(seconds),
                    method=None if f.get("method") is None else Method(f["method"]),
                    reason=None if f.get("reason") is None else NoEstimate(f["reason"]),
                ),
                floor=int(f.get("floor") or 0),
                deadline=None if deadline is None else parse_time(deadline).timestamp(),
            )
    return out


def watch(url: str, *, interval: float) -> int:
    """The table redrawn in place on a terminal (colors as swatches); on a pipe, the plain
    table again each time the plan changes. A daemon that stops answering is shown, not fatal."""
    from rich.console import Console
    from rich.text import Text

    from rainbowd.terminal import plan_view, redraw

    console = Console()
    if not console.is_terminal:
        return _watch_plain(url, interval=interval)

    def view() -> Any:
        try:
            document = read_status(url)
            plan = document.get("plan")
            if plan is None:
                return plan_view(None, header=status_header(document))
            return plan_view(
                plan_from_document(plan),
                forecasts=forecasts_from_document(plan),
                header=status_header(document),
            )
        except StatusUnavailable as exc:
            return Text(f"rainbowd status: {exc}; retrying every {interval:g}s", style="red")
        except (KeyError, TypeError, ValueError) as exc:
            return Text(f"rainbowd status: unexpected /status document: {exc!r}", style="red")

    redraw(console, view, interval=interval)
    return 0


def _watch_plain(url: str, *, interval: float) -> int:
    import time

    last = ""
    try:
        while True:
            try:
                document = read_status(url)
                plan = document.get("plan")
                table = "no plan yet\n"
                if plan is not None:
                    table = render_plan_table(
                        plan_from_document(plan), forecasts=forecasts_from_document(plan)
                    )
            except StatusUnavailable as exc:
                table = f"rainbowd status: {exc}\n"
            except (KeyError, TypeError, ValueError) as exc:
                table = f"rainbowd status: unexpected /status document: {exc!r}\n"
            if table != last:
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                sys.stdout.write(f"--- {stamp}\n{table}")
                sys.stdout.flush()
                last = table
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
