"""`rainbowd check-policy FILE`: validate a policy before it reaches the cluster.

Prints every error (exit 1), or the effective policy rule by rule (exit 0), so a reviewer sees
what each rule will really do once defaults and built-in values are filled in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TextIO

import yaml

from rainbowd.core.durations import format_duration
from rainbowd.core.policy import (
    KNOBS,
    PRESETS,
    WORKLOAD_KINDS,
    ConnectionsQuery,
    Policy,
    PolicyError,
    narrowing_warnings,
    policy_to_document,
    policy_warnings,
)
from rainbowd.core.policy.presets import DEFAULT
from rainbowd.core.scalers import AUTOSCALERS
from rainbowd.policyfile import load_policy_file
from rainbowd.prom.querying import RECORDED_PODS, RECORDED_SUM, RULE_GROUP, recording_rules
from rainbowd.settings import parse_namespaces

_WIDTH = max(len(knob.key) for knob in KNOBS) + 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-policy",
        help="validate a policy file and show the effective policy per rule",
        description=(
            "Validate a DrainPolicy (policy.yaml, or a ConfigMap holding it under "
            "data.policy.yaml). Exit 1 listing every error, or print the effective policy."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the policy file; - reads standard input")
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "rules"),
        default="text",
        help=(
            "text: a readable listing (default); json: the effective policy document; rules: "
            "the recording rules `connections.source: recorded` reads, as a Prometheus rule file"
        ),
    )
    parser.add_argument(
        "--namespaces",
        metavar="NS,NS",
        type=_namespaces,
        default=(),
        help=(
            "show the queries as a rainbowd managing only these namespaces (a shard, "
            "`run --namespaces`) sends them: narrowed to their series"
        ),
    )
    live = parser.add_argument_group(
        "live mode (--live)",
        "Then plan once with this policy against the cluster and Prometheus, read-only, as "
        "`rainbowd plan` does, and print what the policy would meet there: the plan's warnings "
        "(e.g. an Argo Rollouts revision limit about to cut a color that holds connections) and "
        "Prometheus' failures. Nothing is written.",
    )
    live.add_argument("--live", action="store_true", help="check the policy against the cluster")
    live.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file [RAINBOWD_KUBECONFIG]")
    live.add_argument("--context", help="kubeconfig context [RAINBOWD_CONTEXT]")
    live.add_argument(
        "--selector",
        metavar="LABELS",
        help="label selector on Deployments, e.g. tier=chat [RAINBOWD_SELECTOR]",
    )
    parser.set_defaults(func=run)


def _namespaces(text: str) -> tuple[str, ...]:
    try:
        return parse_namespaces(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    source = "<stdin>" if args.file == "-" else args.file
    try:
        policy = load_policy_file(args.file)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    for warning in policy_warnings(policy) + narrowing_warnings(policy, args.namespaces):
        print(f"{source}: warning: {warning}", file=sys.stderr)
    if args.output == "rules":
        # The rules record every namespace, whoever reads them.
        return _rules(policy, source)
    policy = policy.narrowed(args.namespaces)
    if args.output == "json":
        json.dump(policy_to_document(policy), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(policy, source=source, out=sys.stdout)
    if args.live:
        return _live(args, source)
    return 0


def _live(args: argparse.Namespace, source: str) -> int:
    """One read-only plan with the policy against the cluster: its warnings and Prometheus'
    failures on standard error, the count on standard output. 1 when the cluster cannot be read."""
    import asyncio

    from rainbowd.daemon.cycles import plan_once
    from rainbowd.kube.clients import ConfigError, KubeError
    from rainbowd.settings import SettingsError, settings_from_args

    if args.file == "-":
        print(f"{source}: --live: needs the policy as a file, not standard input", file=sys.stderr)
        return 2
    cluster = argparse.Namespace(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespaces=",".join(args.namespaces) or None,
        selector=args.selector,
        policy_configmap=None,
        policy_file=args.file,
    )
    try:
        live = asyncio.run(plan_once(settings_from_args(cluster)))
    except (SettingsError, ConfigError, KubeError, TimeoutError, PolicyError) as exc:
        print(f"{source}: live: {exc}", file=sys.stderr)
        return 1
    for failure in live.prometheus_errors:
        print(f"{source}: live: prometheus: {failure.query}: {failure.message}", file=sys.stderr)
    for warning in live.plan.warnings:
        print(f"{source}: live: warning: {warning}", file=sys.stderr)
    apps = len(live.plan.apps)
    print(
        f"live: {apps} app{'s' * (apps != 1)} planned, {len(live.plan.warnings)} warning(s), "
        f"{len(live.prometheus_errors)} Prometheus failure(s)"
    )
    return 0


def _rules(policy: Policy, source: str) -> int:
    """The rule file recording the one connections query of `policy` read as recorded."""
    queries = {
        dataclasses.replace(rule.connections, recorded=False, matchers=""): rule.name
        for rule in policy.rules
        if rule.connections.recorded
    } or {dataclasses.replace(policy.connections, recorded=False, matchers=""): "connections"}
    if len(queries) > 1:
        print(
            f"{source}: rules {', '.join(queries.values())} read recorded series of different "
            "queries, but the recording rules record one (the series have one set of names)",
            file=sys.stderr,
        )
        return 1
    (query,) = queries
    if query.query is not None:
        print(f"{source}: a free query cannot be recorded", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump(recording_rules(query), sort_keys=False, width=1_000_000))
    return 0


def _query(query: ConnectionsQuery) -> str:
    by = f"by {query.namespace_label}, {query.app_label}, {query.color_label}"
    if query.query is not None:
        return f"{query.query}  ({by}; free query: no coverage check)"
    if query.recorded:
        every = format_duration(query.rule_interval)
        return (
            f"{query.selector}  ({by}; source recorded: the series of the rule group"
            f" {RULE_GROUP}, {RECORDED_SUM} and {RECORDED_PODS}, evaluated every {every},"
            f" read once an evaluation, and the history seeded from {RECORDED_SUM}; the"
            f" per-pod figures (consolidation, deletion costs) from the raw series of the colors"
            f" that need them; `check-policy -o rules` prints the rules)"
        )
    return f"{query.selector}  ({by}; source raw)"


def preset_lines(query: ConnectionsQuery) -> list[str]:
    """What a preset other than the default reads, where each label comes from, its caveats."""
    if query.query is not None or query.preset == DEFAULT:
        return []
    preset = PRESETS[query.preset]
    return [
        f"preset {preset.name}: {preset.counts}",
        f"labels: {preset.labels}",
        *(f"caveat: {caveat}" for caveat in preset.caveats),
    ]


def render(policy: Policy, *, source: str, out: TextIO) -> None:
    """The effective policy, for people: header, then each rule with every knob resolved."""
    rules = len(policy.rules)
    out.write(f"{source}: valid, {rules} rule{'' if rules == 1 else 's'} (first match wins)\n")
    out.write(f"  dryRun: {str(policy.dry_run).lower()}, paused: {str(policy.paused).lower()}\n")
    out.write(
        f"  prometheus: {policy.prometheus.url} "
        f"(timeout {format_duration(policy.prometheus.timeout)})\n"
    )
    out.write(f"  labels: app={policy.app_label}, color={policy.color_label} (pod template)\n")
    cluster = "no cap" if policy.max_disruptions is None else str(policy.max_disruptions)
    out.write(f"  maxDisruptions (all apps): {cluster}\n")
    for rule in policy.rules:
        namespaces = "all" if rule.namespaces is None else ", ".join(sorted(rule.namespaces))
        out.write(f"\nrule {rule.name}\n")
        out.write(f"  {'namespaces:':<{_WIDTH}}{namespaces}\n")
        kinds = [kind for kind in WORKLOAD_KINDS if kind in rule.kinds]
        out.write(f"  {'selector:':<{_WIDTH}}{rule.selector.text or '(any labels)'}\n")
        out.write(f"  {'kinds:':<{_WIDTH}}{', '.join(kinds)}\n")
        out.write(f"  {'connections:':<{_WIDTH}}{_query(rule.connections)}\n")
        out.writelines(f"  {'':<{_WIDTH}}{line}\n" for line in preset_lines(rule.connections))
        for knob in KNOBS:
            shown = knob.text(rule.knobs)
            default = knob.text(policy.defaults)
            note = f"  (defaults: {default})" if shown != default else ""
            out.write(f"  {knob.key + ':':<{_WIDTH}}{shown}{note}\n")
        if rule.knobs.consolidate is not None:
            problem = rule.connections.per_pod_problem
            pods = (
                f"consolidation unavailable: {problem}"
                if problem is not None
                else f'per-pod series by the "{rule.connections.pod_label}" label, which each '
                "series must carry"
            )
            out.write(f"  {'':<{_WIDTH}}{pods}\n")
            if problem is None:
                out.writelines(f"  {'':<{_WIDTH}}{line}\n" for line in AUTOSCALERS)
