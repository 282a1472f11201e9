"""`rainbowd dashboard`, also `kubectl rainbow dashboard`: forwards a local port to the in-cluster
rainbowd Service with `kubectl port-forward` and opens its live page in a browser, until Ctrl-C.
The page is read-only, so nothing here can change the cluster.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from typing import Any

from rainbowd import forwarding
from rainbowd.commands.cluster_args import FAILURE_EXIT, USAGE_EXIT


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="open the in-cluster rainbowd's live page (through kubectl port-forward)",
        description=(
            "Forward a local port on 127.0.0.1 to the rainbowd Service with `kubectl "
            "port-forward`, print the page's address and open it in a browser; Ctrl-C stops."
        ),
    )
    forwarding.add_arguments(parser, port=True)
    parser.add_argument(
        "--no-browser", action="store_true", help="print the address only, open no browser"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        with forwarding.forwarded(args) as forward:
            print(
                f"rainbowd's live page: {forward.url}  (kubectl port-forward; Ctrl-C stops)",
                flush=True,
            )
            if not args.no_browser:
                webbrowser.open(forward.url)
            detail = forward.stopped()
    except forwarding.ForwardError as exc:
        print(f"rainbowd dashboard: {exc}", file=sys.stderr)
        return USAGE_EXIT if exc.usage else FAILURE_EXIT
    except KeyboardInterrupt:
        return 0
    print(f"rainbowd dashboard: kubectl port-forward stopped: {detail}", file=sys.stderr)
    return FAILURE_EXIT
