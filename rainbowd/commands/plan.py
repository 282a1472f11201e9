"""`rainbowd plan`: what the planner would do with a snapshot file, as a table or JSON.

Reads the policy and a snapshot (`kubectl get deployments,services -A -o yaml` plus `now:` and
`connections:`), plans once and prints. Changes nothing anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import Plan, Snapshot
from rainbowd.core.objects import parse_time
from rainbowd.core.planner import plan as make_plan
from rainbowd.core.policy import Policy, PolicyError
from rainbowd.core.reporting import plan_to_document, render_plan_table
from rainbowd.core.snapshots import SnapshotError, snapshot_from_document

OUTPUTS = ("table", "json")


class InputError(Exception):
    """An input file is unreadable or invalid; `errors` are one line each, path-prefixed."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="show what the planner would do with a snapshot file (changes nothing)",
        description=(
            "Plan once from a policy and a snapshot file and print the plan. The snapshot is "
            "`kubectl get deployments,services -A -o yaml` output, optionally with `now:` and "
            "`connections:` (see config/examples/snapshot.yaml)."
        ),
    )
    parser.add_argument("--policy", metavar="FILE", help="the policy.yaml to use")
    parser.add_argument(
        "--snapshot",
        metavar="FILE",
        help="the snapshot file, YAML or JSON; without it, read the live cluster (see below)",
    )
    add_output_arguments(parser)
    live = parser.add_argument_group(
        "live cluster (no --snapshot)",
        "List the cluster, query Prometheus and plan once, read-only: nothing is written.",
    )
    add_live_arguments(live)
    parser.set_defaults(func=run)


def add_live_arguments(group: Any) -> None:
    # Imported here: the daemon's settings are needed only by the live mode's flags.
    from rainbowd.settings import add_cluster_arguments

    add_cluster_arguments(group)


def run_live(args: argparse.Namespace) -> int:
    """No snapshot file: one read-only cycle against the cluster (list, query, plan)."""
    import asyncio

    from rainbowd.daemon.cycles import plan_once
    from rainbowd.kube.clients import ConfigError, KubeError
    from rainbowd.settings import SettingsError, settings_from_args

    if args.now is not None:
        print(
            "rainbowd plan: --now: only with --snapshot; a live plan is as of now", file=sys.stderr
        )
        return 2
    if args.policy is not None and args.policy_file is None and args.policy_configmap is None:
        args.policy_file = args.policy
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"rainbowd plan: {exc}", file=sys.stderr)
        return 2
    try:
        live = asyncio.run(plan_once(settings))
    except PolicyError as exc:
        for error in exc.errors:
            print(f"rainbowd plan: {error}", file=sys.stderr)
        return 1
    except (ConfigError, KubeError, TimeoutError) as exc:
        print(f"rainbowd plan: {exc}", file=sys.stderr)
        return 1
    for failure in live.prometheus_errors:
        print(f"rainbowd plan: prometheus: {failure.query}: {failure.message}", file=sys.stderr)
    sys.stdout.write(render(live.plan, args.output, forecasts=live.forecasts))
    return 0


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--now and --output, shared by every way of getting a snapshot to plan."""
    parser.add_argument(
        "--now",
        type=_now_argument,
        default=None,
        metavar="RFC3339",
        help="plan as of this time (default: the snapshot's now:, else the current time)",
    )
    parser.add_argument(
        "--output", "-o", choices=OUTPUTS, default="table", help="table (default) or json"
    )


def _now_argument(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time like 2026-11-21T12:00:00Z, got {text!r}"
        ) from None


def load_snapshot_file(path: str | Path, *, default_now: datetime) -> Snapshot:
    """Read a snapshot file (YAML or JSON; `-` is standard input) or raise InputError."""
    source = str(path)
    try:
        text = sys.stdin.read() if source == "-" else Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    except OSError as exc:
        raise InputError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError([f"{source}: {where}not valid YAML: {problem}"]) from exc
    try:
        return snapshot_from_document(document, default_now=default_now)
    except SnapshotError as exc:
        raise InputError([f"{source}: {error}" for error in exc.errors]) from exc


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file or raise InputError (errors already name the file)."""
    # Imported here: the policy file reader brings its YAML loader, needed only on this path.
    from rainbowd.policyfile import load_policy_file

    try:
        return load_policy_file(path)
    except PolicyError as exc:
        raise InputError(list(exc.errors)) from exc


def render(
    plan: Plan, output: str, *, forecasts: Mapping[ColorKey, ColorForecast] | None = None
) -> str:
    """The plan as the table or as indented JSON, ending with a newline; `forecasts` (a live
    plan's) fill the ETA column and each draining color's `forecast`."""
    if output == "json":
        return json.dumps(plan_to_document(plan, forecasts=forecasts), indent=2) + "\n"
    return render_plan_table(plan, forecasts=forecasts)


def run(args: argparse.Namespace) -> int:
    if args.snapshot is None:
        return run_live(args)
    if args.policy is None:
        print("rainbowd plan: --policy: required with --snapshot", file=sys.stderr)
        return 2
    errors: list[str] = []
    policy: Policy | None = None
    snapshot: Snapshot | None = None
    # Both files are checked before giving up, so one run reports every mistake.
    try:
        policy = load_policy(args.policy)
    except InputError as exc:
        errors.extend(exc.errors)
    try:
        snapshot = load_snapshot_file(args.snapshot, default_now=datetime.now(UTC))
    except InputError as exc:
        errors.extend(exc.errors)
    if errors or policy is None or snapshot is None:
        for error in errors:
            print(f"rainbowd plan: {error}", file=sys.stderr)
        return 1
    now = args.now if args.now is not None else snapshot.now
    sys.stdout.write(render(make_plan(snapshot, policy, now), args.output))
    return 0
