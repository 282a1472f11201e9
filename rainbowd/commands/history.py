"""`rainbowd history`: an app's colors, oldest first, with when each went live, was retired,
scaled down or deleted, and rainbowd's last word on it (from annotations and Events).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rainbowd.commands.cluster_args import add_cluster_arguments, namespace_of, run_with_api


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "history",
        help="an app's colors, oldest first: live, retired, scaled down, deleted, and why",
        description=(
            "List the app's colors oldest first with rainbowd's annotations (live-at, "
            "retired-at, hold-until) and Events (scaled down, deleted; deleted colors are "
            "known from their Events while the apiserver keeps them, 1h by default)."
        ),
    )
    add_cluster_arguments(parser)
    parser.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="table or json"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rainbowd.core.objects import format_time
    from rainbowd.deploy import AppRef, history, render_history

    ref = AppRef(namespace=namespace_of(args), app=args.app, service=args.service)

    async def body(api: Any) -> int:
        rows = await history(api, ref)
        if args.output == "json":
            doc = [
                {
                    **{k: v for k, v in vars(row).items() if k != "created"},
                    "created": format_time(row.created) if row.created else None,
                }
                for row in rows
            ]
            print(json.dumps(doc, indent=2))
        else:
            sys.stdout.write(render_history(rows))
        return 0

    return run_with_api("history", args.kubeconfig, args.context, body)
