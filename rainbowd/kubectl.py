"""The kubectl plugin: `kubectl rainbow status|plan|deploy|rollback|promote|hold|release|history|
dashboard` runs the same commands as `rainbowd`, with kubectl's `-n/--namespace`, `--context` and
`--kubeconfig` accepted before or after the subcommand; `kubectl_complete-rainbow` completes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rainbowd import cli

# The commands that work on a cluster's apps, then the page of the rainbowd running in it.
_WORKFLOW = ("status", "plan", "deploy", "rollback", "promote", "hold", "release", "history")
SUBCOMMANDS = (*_WORKFLOW, "dashboard")
# kubectl's global flags a user types before the plugin's subcommand (`kubectl rainbow -n ns
# deploy ...`); moved after it, where every workflow command takes them.
_GLOBAL_FLAGS = ("-n", "--namespace", "--context", "--kubeconfig")
# cobra's ShellCompDirectiveNoFileComp: the shell offers no file names besides these.
_NO_FILE_COMPLETION = 4


def _hoist(argv: Sequence[str]) -> list[str]:
    moved: list[str] = []
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        flag = rest[0]
        name = flag.split("=", 1)[0]
        if name not in _GLOBAL_FLAGS:
            break
        if "=" in flag or len(rest) < 2:
            moved.append(rest.pop(0))
        else:
            moved.extend([rest.pop(0), rest.pop(0)])
    if not rest:
        return [*rest, *moved]
    return [rest[0], *moved, *rest[1:]]


def _parser() -> argparse.ArgumentParser:
    return cli.build_parser(commands=SUBCOMMANDS, prog="kubectl rainbow")


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-rainbow`: kubectl finds it on PATH and passes it the words after `rainbow`."""
    args = _hoist(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["status"] and not any(a.split("=", 1)[0] == "--url" for a in args):
        # From kubectl, the rainbowd to ask is the one running in the cluster.
        args.insert(1, "--in-cluster")
    return cli.main(args, parser=_parser())


def complete(argv: Sequence[str] | None = None) -> int:
    """`kubectl_complete-rainbow`: kubectl calls it with the words typed after `kubectl rainbow`,
    the last one being completed, and reads cobra's answer: candidates, then `:directive`."""
    words = list(sys.argv[1:] if argv is None else argv)
    current = words.pop() if words else ""
    typed = [w for w in words if not w.startswith("-")]
    if not typed:
        candidates = [c for c in SUBCOMMANDS if c.startswith(current)]
    else:
        subparser = _subparser(typed[0])
        options = (
            [o for action in subparser._actions for o in action.option_strings]
            if subparser is not None
            else []
        )
        candidates = sorted(o for o in options if o.startswith(current)) if current else []
    for candidate in candidates:
        print(candidate)
    print(f":{_NO_FILE_COMPLETION}")
    return 0


def _subparser(name: str) -> argparse.ArgumentParser | None:
    parser = _parser()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and name in choices:
            found: argparse.ArgumentParser = choices[name]
            return found
    return None
