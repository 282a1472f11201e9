"""`rainbowd sandbox`: rainbowd running for real on this machine, and `rainbowd sandbox deploy`,
which ships a new color of the sandbox's app from another terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rainbowd.core.durations import parse_duration
from rainbowd.settings import parse_listen


def _duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535 (0: any free), got {port}")
    return port


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of replicas, got {text!r}") from None
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(f"expected 1 to 10 replicas, got {value}")
    return value


def _listen_port(text: str) -> int:
    try:
        _host, port = parse_listen(text if ":" in text else f":{text}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return port


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="run rainbowd for real on this machine: cluster, Prometheus, demo app, daemon",
        description=(
            "Start a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, "
            "scheduler, kwok), a real Prometheus, the seed's rainbow-deploys app with one "
            "demo_app process per ready pod behind a loopback Service, the policy ConfigMap "
            "(config/sandbox-policy.yaml) and the rainbowd daemon; all on 127.0.0.1, until "
            "Ctrl-C. With --story, play the seed's story through and tell each step."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep data and logs here, and after exit (default: a temporary folder, removed)",
    )
    parser.add_argument(
        "--namespace", default="default", help="namespace of the app and policy (default)"
    )
    parser.add_argument(
        "--replicas", type=_replicas, default=2, help="replicas per color (2, as in the seed)"
    )
    parser.add_argument(
        "--story",
        action="store_true",
        help="deploy two colors, hold a connection to the old one, and watch rainbowd drain it",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="run on a real node (containerd, kubelet, kube-proxy; root on Linux, parts from "
        "scripts/setup) with rainbowd in-cluster from its image, instead of kwok's fake node",
    )
    parser.add_argument(
        "--exit-after-story",
        action="store_true",
        help="stop everything once the story ends (default: keep running until Ctrl-C)",
    )
    parser.add_argument(
        "--min-retired-age",
        type=_duration,
        metavar="DURATION",
        help="the policy's minRetiredAge (30s in config/sandbox-policy.yaml)",
    )
    parser.add_argument(
        "--drain-hold",
        type=_duration,
        metavar="DURATION",
        help="the policy's drainHold (10s in config/sandbox-policy.yaml)",
    )
    parser.add_argument(
        "--listen",
        type=_listen_port,
        default=0,
        metavar="PORT",
        help="port of rainbowd's /status and /metrics on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument(
        "--service-http-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="port of the Service's HTTP side on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument(
        "--service-tcp-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="port of the Service's color stream on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help=(
            "show the logs here too: rainbowd's and the sandbox's, the control plane's, "
            "Prometheus's and the demo pods' (always in files; paths printed)"
        ),
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="lowest level logged (info)",
    )
    parser.set_defaults(func=run)

    actions = parser.add_subparsers(dest="sandbox_command", metavar="ACTION")
    deploy = actions.add_parser(
        "deploy",
        help="ship a new color to a running sandbox",
        description=(
            "A rainbow deploy of the sandbox's app: create the Deployment rainbow-deploys-COLOR, "
            "wait until it is Available, then switch the Service to it. The old colors are left "
            "running, for rainbowd to burn down."
        ),
    )
    deploy.add_argument(
        "color", nargs="?", help="six hex digits (default: random, as a new git sha would be)"
    )
    deploy.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="the sandbox's kubeconfig, as it printed [KUBECONFIG]",
    )
    deploy.add_argument(
        "--namespace",
        dest="deploy_namespace",
        default="default",
        help="namespace of the app (default)",
    )
    deploy.add_argument(
        "--replicas", dest="deploy_replicas", type=_replicas, default=2, help="replicas (2)"
    )
    deploy.set_defaults(func=run_deploy)


def run(args: argparse.Namespace) -> int:
    # Imported here so `rainbowd --help` needs none of the sandbox's machinery.
    if args.node:
        from rainbowd_sandbox.controlplane import in_checkout

        if not in_checkout():
            print(
                "rainbowd sandbox --node: runs from a rainbowd checkout (it builds rainbowd's "
                "image from the source and installs k8s/sandbox); an installed rainbowd runs the "
                "sandbox on kwok's fake node (without --node)",
                file=sys.stderr,
            )
            return 1
        from rainbowd_sandbox.nodesandbox import NodeSandboxOptions, run_node_sandbox

        return run_node_sandbox(
            NodeSandboxOptions(
                namespace=args.namespace,
                story=args.story or args.exit_after_story,
                exit_after_story=args.exit_after_story,
                log_level=args.log_level,
            )
        )
    from rainbowd_sandbox.runner import SandboxOptions, run_sandbox

    options = SandboxOptions(
        data_dir=args.data_dir.resolve() if args.data_dir is not None else None,
        namespace=args.namespace,
        replicas=args.replicas,
        daemon_port=args.listen,
        service_http_port=args.service_http_port,
        service_tcp_port=args.service_tcp_port,
        min_retired_age=args.min_retired_age,
        drain_hold=args.drain_hold,
        story=args.story or args.exit_after_story,
        exit_after_story=args.exit_after_story,
        log_level=args.log_level,
        verbose=args.verbose,
    )
    return run_sandbox(options)


def run_deploy(args: argparse.Namespace) -> int:
    """`rainbowd deploy` of the sandbox's app, with its template and a random color."""
    from rainbowd.commands import deploy
    from rainbowd_sandbox import app as seed

    color = (args.color or seed.new_color()).removeprefix("#").lower()
    if not args.kubeconfig:
        print(
            "rainbowd sandbox deploy: no kubeconfig: pass --kubeconfig or export KUBECONFIG "
            "as `rainbowd sandbox` printed",
            file=sys.stderr,
        )
        return 2
    return deploy.run_request(
        seed.deploy_request(args.deploy_namespace, color, replicas=args.deploy_replicas),
        kubeconfig=args.kubeconfig,
        context=None,
        command="sandbox deploy",
    )
