"""`rainbowd hold COLOR` and `rainbowd release COLOR`: keep a color from any action by rainbowd
until a time (rainbowd.io/hold-until, RFC 3339 UTC, and rainbowd.io/hold-reason), and let go.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rainbowd.commands.cluster_args import (
    add_cluster_arguments,
    duration_seconds,
    namespace_of,
    run_with_api,
    say,
)

DEFAULT_HOLD = "6h"


def register(subparsers: Any) -> None:
    hold = subparsers.add_parser(
        "hold",
        help="keep a color from being scaled down or deleted until a time",
        description=(
            "Write rainbowd.io/hold-until (now + --for, RFC 3339 UTC) and rainbowd.io/hold-reason "
            "on the color's Deployment. rainbowd plans a held color as protected until the time "
            "passes; a malformed value counts as held."
        ),
    )
    hold.add_argument("color", metavar="COLOR", help="the color to hold")
    add_cluster_arguments(hold, app=False)
    hold.add_argument("--app", help="the app, when several apps have this color")
    hold.add_argument(
        "--for",
        dest="hold_for",
        type=duration_seconds,
        default=duration_seconds(DEFAULT_HOLD),
        metavar="DURATION",
        help=f"how long ({DEFAULT_HOLD})",
    )
    hold.add_argument("--reason", help="why, shown in status and history")
    hold.set_defaults(func=run_hold)

    release = subparsers.add_parser(
        "release",
        help="end a hold: the color follows the policy again",
        description="Remove rainbowd.io/hold-until and rainbowd.io/hold-reason from the color.",
    )
    release.add_argument("color", metavar="COLOR", help="the held color")
    add_cluster_arguments(release, app=False)
    release.add_argument("--app", help="the app, when several apps have this color")
    release.set_defaults(func=run_release)


def run_hold(args: argparse.Namespace) -> int:
    from rainbowd.core.instants import Beyond, later
    from rainbowd.core.objects import format_time
    from rainbowd.deploy import hold, validate_color

    namespace = namespace_of(args)

    async def body(api: Any) -> int:
        color = validate_color(args.color.removeprefix("#").lower())
        # A hold longer than the calendar holds is a hold forever.
        until = later(datetime.now(UTC), args.hold_for, beyond=Beyond.NEVER)
        name = await hold(api, namespace, color, app=args.app, until=until, reason=args.reason)
        reason = f" ({args.reason})" if args.reason else ""
        say(f"{name} held until {format_time(until)}{reason}: rainbowd will not touch it")
        return 0

    return run_with_api("hold", args.kubeconfig, args.context, body)


def run_release(args: argparse.Namespace) -> int:
    from rainbowd.deploy import release, validate_color

    namespace = namespace_of(args)

    async def body(api: Any) -> int:
        color = validate_color(args.color.removeprefix("#").lower())
        name = await release(api, namespace, color, app=args.app)
        say(f"{name} released: it follows the policy again")
        return 0

    return run_with_api("release", args.kubeconfig, args.context, body)
