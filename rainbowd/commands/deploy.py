"""`rainbowd deploy`: a rainbow deploy of one color: create its Deployment (from a template with
__COLOR__, or the live color's with a new image), wait until it is Available, run a smoke check,
and switch the Service to it; or, with --canary, add it beside the live color.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rainbowd.commands.cluster_args import (
    USAGE_EXIT,
    add_cluster_arguments,
    duration_seconds,
    namespace_of,
    run_with_api,
    say,
)

if TYPE_CHECKING:
    from rainbowd.deploy import DeployRequest


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of replicas, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 replica, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="ship a color: create it, wait until Available, check it, switch the Service",
        description=(
            "A rainbow deploy. Creates the color's Deployment (re-running for an existing "
            "color does not re-create it), waits until it is Available (failing fast on "
            "ProgressDeadlineExceeded, ImagePullBackOff or CrashLoopBackOff), runs --check, "
            "then switches the Service's selector to the color under a resourceVersion "
            "precondition and records the previous color on the Service for `rainbowd "
            "rollback`. On any failure the Service stays on the old color and the exit code "
            "is 1. The old colors keep running, for rainbowd to burn down once drained."
        ),
    )
    add_cluster_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-f",
        "--filename",
        metavar="TEMPLATE",
        help=(
            "YAML with __COLOR__ (the seed's app.yaml): one Deployment, optionally its Service; "
            "- reads stdin"
        ),
    )
    source.add_argument("--image", help="clone the live color's Deployment with this image")
    parser.add_argument(
        "--container", help="with --image and several containers: the one to change"
    )
    parser.add_argument(
        "--color",
        help="six hex digits or a DNS label (default: the first six of `git rev-parse HEAD`)",
    )
    parser.add_argument(
        "--timeout",
        type=duration_seconds,
        default=600.0,
        metavar="DURATION",
        help="how long to wait for Available (10m)",
    )
    parser.add_argument(
        "--check",
        metavar="CMD",
        help=(
            "smoke test run before the switch (sh -c); sees RAINBOWD_COLOR, RAINBOWD_POD_IPS, "
            "RAINBOWD_POD_NAMES, RAINBOWD_DEPLOYMENT, RAINBOWD_PREVIOUS_COLOR, RAINBOWD_APP, "
            "RAINBOWD_NAMESPACE; non-zero: no switch"
        ),
    )
    parser.add_argument("--replicas", type=_replicas, help="replicas (default: the template's)")
    parser.add_argument(
        "--canary",
        action="store_true",
        help="make the Service select the app only: old and new colors both take connections",
    )
    parser.add_argument(
        "--cleanup-on-failure",
        action="store_true",
        help="delete the color this command created when the deploy fails",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rainbowd.deploy import AppRef, DeployError, DeployRequest, git_color

    template = None
    if args.filename is not None:
        try:
            template = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        except OSError as exc:
            print(f"rainbowd deploy: -f {args.filename}: {exc.strerror}", file=sys.stderr)
            return USAGE_EXIT
    if args.color is None:
        try:
            args.color = asyncio.run(git_color())
        except DeployError as exc:
            print(f"rainbowd deploy: {exc}", file=sys.stderr)
            return USAGE_EXIT
    request = DeployRequest(
        ref=AppRef(namespace=namespace_of(args), app=args.app, service=args.service),
        color=args.color.removeprefix("#").lower(),
        template=template,
        template_source=args.filename or "template",
        image=args.image,
        container=args.container,
        replicas=args.replicas,
        timeout=args.timeout,
        canary=args.canary,
        cleanup_on_failure=args.cleanup_on_failure,
    )
    return run_request(request, kubeconfig=args.kubeconfig, context=args.context, check=args.check)


def run_request(
    request: DeployRequest,
    *,
    kubeconfig: str | None,
    context: str | None,
    check: str | None = None,
    command: str = "deploy",
) -> int:
    """Runs one deploy, telling each step on stdout; `rainbowd sandbox deploy` shares it."""
    from rainbowd.deploy import command_check, deploy

    ref = request.ref
    say(f"deploying #{request.color} of {ref.app} in namespace {ref.namespace}")

    async def body(api: Any) -> int:
        await deploy(
            api,
            request,
            check=command_check(check, say=say) if check else None,
            say=say,
        )
        return 0

    return run_with_api(command, kubeconfig, context, body)
