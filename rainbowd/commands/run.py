"""`rainbowd run`: the daemon. Parses its settings and hands them to rainbowd.daemon.

Bad settings exit 2 with a message naming the flag or environment variable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rainbowd.settings import SettingsError, add_arguments, settings_from_args


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the daemon: watch colors, plan, burn down drained ones",
        description=(
            "Watch every managed app's colors, ask Prometheus how many connections each holds, "
            "and scale down or delete the retired colors that have drained. Every flag has an "
            "environment default RAINBOWD_<FLAG>."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"rainbowd run: {exc}", file=sys.stderr)
        return 2
    # Imported here so `rainbowd --help` and bad flags need none of the daemon's clients.
    from rainbowd.daemon import main

    return main(settings)
