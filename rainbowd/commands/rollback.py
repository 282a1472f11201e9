"""`rainbowd rollback`: the Service back on the previous color (or --to COLOR), scaled back up
first when rainbowd scaled it to 0; during a canary, the Service narrowed to the old color.
"""

from __future__ import annotations

import argparse
from typing import Any

from rainbowd.commands.cluster_args import (
    add_cluster_arguments,
    duration_seconds,
    namespace_of,
    run_with_api,
    say,
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rollback",
        help="switch the Service back to the previous color, scaling it up if needed",
        description=(
            "Switch the app's Service back to the previous live color (recorded on the Service "
            "by `rainbowd deploy`) or to --to COLOR. A color rainbowd scaled to 0 is first "
            "restored to its rainbowd.io/original-replicas and waited on until Available; it "
            "is held meanwhile so rainbowd leaves it alone. The color rolled away from becomes "
            "retired and follows the policy. During a canary, narrows the Service to the old "
            "color."
        ),
    )
    add_cluster_arguments(parser)
    parser.add_argument("--to", metavar="COLOR", help="the color to go back to")
    parser.add_argument(
        "--check",
        metavar="CMD",
        help="smoke test before the switch, as for `rainbowd deploy --check`; non-zero: no switch",
    )
    parser.add_argument(
        "--timeout",
        type=duration_seconds,
        default=600.0,
        metavar="DURATION",
        help="how long to wait for the color to be Available again (10m)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rainbowd.deploy import AppRef, command_check, rollback

    ref = AppRef(namespace=namespace_of(args), app=args.app, service=args.service)

    async def body(api: Any) -> int:
        to = args.to.removeprefix("#").lower() if args.to else None
        target = f"#{to}" if to else "the previous color"
        say(f"rolling {ref.app} in namespace {ref.namespace} back to {target}")
        check = command_check(args.check, say=say) if args.check else None
        await rollback(api, ref, to=to, within=args.timeout, check=check, say=say)
        return 0

    return run_with_api("rollback", args.kubeconfig, args.context, body)
