"""`rainbowd promote`: ends a canary by narrowing the Service to the canary color."""

from __future__ import annotations

import argparse
from typing import Any

from rainbowd.commands.cluster_args import add_cluster_arguments, namespace_of, run_with_api, say


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "promote",
        help="end a canary: the Service selects the canary color only",
        description=(
            "After `rainbowd deploy --canary`, narrow the app's Service to the canary color. "
            "The old color becomes retired and follows the policy; `rainbowd rollback` instead "
            "narrows it to the old color."
        ),
    )
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rainbowd.deploy import AppRef, promote

    ref = AppRef(namespace=namespace_of(args), app=args.app, service=args.service)

    async def body(api: Any) -> int:
        await promote(api, ref, say=say)
        return 0

    return run_with_api("promote", args.kubeconfig, args.context, body)
