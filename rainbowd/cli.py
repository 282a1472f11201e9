"""Entry point: `rainbowd <command>`; each command lives in rainbowd.commands.<module>."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rainbowd import __version__

# Subcommand modules, in the order `rainbowd --help` lists them.
COMMANDS = (
    "run",
    "plan",
    "status",
    "deploy",
    "rollback",
    "check_policy",
    "sandbox",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rainbowd",
        description="Burns down the old colors of rainbow deploys once their connections drain.",
    )
    parser.add_argument("--version", action="version", version=f"rainbowd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rainbowd.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rainbowd.commands.{name}":
                raise
            continue  # not written yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rainbowd plan ... | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
