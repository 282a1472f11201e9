"""`rainbowd status`: asks a running daemon for its /status and prints the plan table (or JSON).

The document is read by rainbowd.status, the one reader of /status; the table is rendered by the
same reporting code as `rainbowd plan`, so a plan reads the same whether computed or fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rainbowd import forwarding
from rainbowd.commands.cluster_args import FAILURE_EXIT, USAGE_EXIT
from rainbowd.core.reporting import render_plan_table
from rainbowd.status import Status, status_from_document

DEFAULT_URL = "http://127.0.0.1:8080"
# A daemon answers /status from memory; anything slower than this is not going to answer.
TIMEOUT = 10.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show a running daemon's last plan",
        description=(
            "Fetch /status from a running `rainbowd run` and print its last plan: at --url, or "
            "in the cluster through `kubectl port-forward` to its Service (--in-cluster, implied "
            "by --kubeconfig or --context, and the default of `kubectl rainbow status`)."
        ),
    )
    parser.add_argument(
        "--url",
        help=f"the daemon's HTTP address (else $RAINBOWD_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--in-cluster",
        action="store_true",
        help="ask the rainbowd running in the cluster, through kubectl port-forward",
    )
    forwarding.add_arguments(parser)
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
    if args.url is None and (args.in_cluster or args.kubeconfig or args.context):
        try:
            with forwarding.forwarded(args) as forward:
                return _show(args, forward.url)
        except forwarding.ForwardError as exc:
            print(f"rainbowd status: {exc}", file=sys.stderr)
            return USAGE_EXIT if exc.usage else FAILURE_EXIT
        except KeyboardInterrupt:
            return 0
    return _show(args, args.url or os.environ.get("RAINBOWD_URL") or DEFAULT_URL)


def _show(args: argparse.Namespace, base: str) -> int:
    url = base.rstrip("/") + "/status"
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
    status = status_from_document(document)
    text = "\n".join(status_header(status)) + "\n\n"
    if status.plan is None:
        return text + "no plan yet\n"
    return text + render_plan_table(status.plan, forecasts=status.forecasts)


def status_header(status: Status) -> list[str]:
    """The lines about the daemon itself: identity, leader, policy, the last cycle."""
    policy = status.policy
    cycle = status.cycle
    lines = [
        f"daemon:  {status.identity or '?'}"
        f"  leader={_yes(status.leader)}  ready={_yes(status.ready)}",
        f"policy:  {policy.source or '?'}  valid={_yes(policy.valid)}",
    ]
    for error in policy.errors:
        lines.append(f"  error: {error}")
    if cycle is not None:
        lines.append(
            f"cycle:   #{cycle.number} at {cycle.started_at.isoformat()}"
            f"  took {cycle.duration * 1000:.0f}ms"
            f"  ok={_yes(cycle.ok)}" + (f"  error: {cycle.error}" if cycle.error else "")
        )
        for failure in cycle.prometheus_errors:
            lines.append(f"  prometheus: {failure.query}: {failure.cause}: {failure.message}")
    else:
        lines.append("cycle:   none yet")
    return lines


def _yes(value: object) -> str:
    return "yes" if value else "no"


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
            status = status_from_document(read_status(url))
            return plan_view(status.plan, forecasts=status.forecasts, header=status_header(status))
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
                status = status_from_document(read_status(url))
                table = "no plan yet\n"
                if status.plan is not None:
                    table = render_plan_table(status.plan, forecasts=status.forecasts)
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
