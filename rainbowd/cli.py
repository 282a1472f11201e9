"""Entry point: `rainbowd <command>`; each command lives in rainbowd.commands.<module>, and
`rainbowd sandbox` in the rainbowd-sandbox package, found through its entry point.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from rainbowd import __version__
from rainbowd.commands import (
    check_policy,
    dashboard,
    deploy,
    history,
    hold,
    plan,
    promote,
    rollback,
    run,
    status,
)

SANDBOX_PACKAGE = "rainbowd-sandbox"
# Where other packages name the commands they add: `name = "module:register"`.
COMMAND_GROUP = "rainbowd.commands"


def _register_sandbox(subparsers: Any) -> None:
    """`rainbowd sandbox` from the rainbowd-sandbox package, else a command that says how to get
    it, whatever arguments it is given (`--help` included: the help says the same)."""
    for found in entry_points(group=COMMAND_GROUP, name="sandbox"):
        register: Callable[[Any], None] = found.load()
        register(subparsers)
        return
    missing = (
        f"the sandbox is not installed: it is the {SANDBOX_PACKAGE} package, in rainbowd's "
        "repository (sandbox/); `pip install ./sandbox` in a checkout installs it beside rainbowd, "
        "and `make setup` there installs both"
    )
    # No option prefix: every argument, options included, is taken as it comes.
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help=f"run rainbowd for real on this machine (needs the {SANDBOX_PACKAGE} package)",
        description=f"The local sandbox: {missing}.",
        usage="rainbowd sandbox ...",
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def say_missing(args: argparse.Namespace) -> int:
        if {"-h", "--help"} & set(args.arguments):
            parser.print_help()
            return 0
        print(f"rainbowd sandbox: {missing}", file=sys.stderr)
        return 2

    parser.set_defaults(func=say_missing)


# Each subcommand's `register(subparsers)`, in the order `rainbowd --help` lists them.
REGISTER: dict[str, Callable[[Any], None]] = {
    "run": run.register,
    "plan": plan.register,
    "status": status.register,
    "deploy": deploy.register,
    "rollback": rollback.register,
    "promote": promote.register,
    "hold": hold.register,
    "history": history.register,
    "dashboard": dashboard.register,
    "check_policy": check_policy.register,
    "sandbox": _register_sandbox,
}
COMMANDS = tuple(REGISTER)


def build_parser(
    commands: Sequence[str] = COMMANDS, *, prog: str = "rainbowd"
) -> argparse.ArgumentParser:
    """The parser of the commands named (subcommand modules; `hold` also registers `release`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Burns down the old colors of rainbow deploys once their connections drain.",
    )
    parser.add_argument("--version", action="version", version=f"rainbowd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in dict.fromkeys("hold" if c == "release" else c for c in commands):
        REGISTER[name](sub)
    return parser


def main(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    interruptible()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rainbowd plan ... | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


def interruptible() -> None:
    """Ctrl-C stops every command, however it was started: a shell starts a background job with
    SIGINT ignored, and a child inherits that, so a `rainbowd deploy` started that way would sit
    out its timeout. Like kubectl and other Go programs, take SIGINT back (a KeyboardInterrupt);
    the commands that run a loop install their own handlers over it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
