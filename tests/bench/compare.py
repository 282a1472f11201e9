"""Before/after: the same benchmarks on a baseline git ref and on this tree, in one run.

    python -m tests.bench compare --against <ref> [--rounds N] planner cycle
    python -m tests.bench compare --against <ref> profile_cycle:10:10000:moving

The baseline is checked out in a temporary `git worktree` (removed afterwards). Each round runs
`python -m tests.bench <names>` once per side, each in its own process, the side that goes first
alternating from round to round, so load on a shared machine falls on both sides alike. Every
figure a benchmark prints as "<what>: median <x> ms" (or "<what> <x> ms") is collected; the table
gives, per figure, the median over the rounds of each side and the ratio this/baseline, with
the range of the rounds' own ratios. A name that is a module of tests/bench other than a
`bench_` one (`profile_cycle`) runs as `python -m tests.bench.<name>`, with the arguments that
follow it after colons. The load average is printed at each run and beside the table: on a
shared machine it says how far the figures are inflated. Asserts nothing on time: it prints
numbers beside their baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_MEDIAN = re.compile(r"median (\d+(?:\.\d+)?) ms")
_SINGLE = re.compile(r"^(.*\S) (\d+(?:\.\d+)?) ms$")

Figures = dict[str, float]


def figures(output: str) -> Figures:
    """The figures a benchmark printed, by what they measure, in milliseconds."""
    found: Figures = {}
    for line in output.splitlines():
        median = _MEDIAN.search(line)
        if median is not None:
            found[line[: median.start()].rstrip(":, ")] = float(median.group(1))
            continue
        single = _SINGLE.match(line.strip())
        if single is not None:
            found[single.group(1)] = float(single.group(2))
    return found


def _environment(tree: Path) -> dict[str, str]:
    """Imports from `tree`: its runtime package, its sandbox package and its benchmarks."""
    paths = [str(tree), str(tree / "sandbox")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _check_imports(tree: Path) -> None:
    """Refuses to compare a tree with itself: its packages must load from `tree`."""
    probe = (
        "import importlib.util as u\n"
        "for name in ('rainbowd', 'rainbowd_sandbox', 'tests.bench'):\n"
        "    spec = u.find_spec(name)\n"
        "    print(spec.origin if spec else '')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree,
        env=_environment(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wrong = [origin for origin in out if not Path(origin).resolve().is_relative_to(tree.resolve())]
    if wrong:
        raise SystemExit(f"compare: in {tree}, these load from elsewhere: {', '.join(wrong)}")


def _commands(names: list[str]) -> list[list[str]]:
    """The processes running `names`: the benchmarks in one, each other module in its own."""
    benchmarks = [name for name in names if script(name) is None]
    commands = (
        [[sys.executable, "-m", "tests.bench", *benchmarks]] if benchmarks or not names else []
    )
    for name in names:
        found = script(name)
        if found is not None:
            module, *args = found
            commands.append([sys.executable, "-m", f"tests.bench.{module}", *args])
    return commands


def script(name: str) -> list[str] | None:
    """A module of tests/bench other than a `bench_` one, and its arguments, from `name`
    (`profile_cycle:10:10000:moving`); None for anything else."""
    module, *args = name.split(":")
    if module.startswith("bench_") or not (Path(__file__).parent / f"{module}.py").exists():
        return None
    return [module, *args]


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(tree: Path, names: list[str]) -> Figures:
    found: Figures = {}
    for command in _commands(names):
        done = subprocess.run(
            command,
            cwd=tree,
            env=_environment(tree),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"compare: the benchmarks failed in {tree}:\n{done.stdout}{done.stderr}"
            )
        found.update(figures(done.stdout))
    return found


def _worktree(ref: str, into: Path) -> Path:
    """`ref` checked out (detached) in a temporary worktree, with this tree's build cache."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(into), ref],
        check=True,
    )
    cache = ROOT / ".cache"
    if cache.exists():
        (into / ".cache").symlink_to(cache.resolve())
    return into


def _table(ref: str, rounds: list[tuple[Figures, Figures]]) -> str:
    names = [name for name in rounds[0][1] if all(name in b and name in t for b, t in rounds)]
    head = "figure (ms, median of the rounds)"
    lines = [f"{head:<72} {ref[:12]:>12} {'this':>9} {'ratio':>6}  rounds"]
    for name in names:
        base = statistics.median(b[name] for b, _ in rounds)
        this = statistics.median(t[name] for _, t in rounds)
        ratios = [t[name] / b[name] for b, t in rounds if b[name] > 0]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
        ratio = f"{this / base:.2f}" if base > 0 else "-"
        lines.append(f"{name[:72]:<72} {base:>12.1f} {this:>9.1f} {ratio:>6}  {spread}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench compare", description=__doc__)
    parser.add_argument("--against", required=True, help="the baseline: a git ref")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("names", nargs="*", help="benchmarks, as for python -m tests.bench")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="rainbowd-bench-base-") as scratch:
        base = Path(scratch) / "base"
        _worktree(args.against, base)
        try:
            _check_imports(base)
            _check_imports(ROOT)
            rounds: list[tuple[Figures, Figures]] = []
            for i in range(args.rounds):
                order = [(base, "base"), (ROOT, "this")]
                if i % 2:
                    order.reverse()
                got: dict[str, Figures] = {}
                for tree, side in order:
                    print(f"compare: round {i + 1}/{args.rounds}, {side}, {_load()}", flush=True)
                    got[side] = _run(tree, args.names)
                rounds.append((got["base"], got["this"]))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )
    print(
        f"compare: {args.against} (baseline) vs this tree, {args.rounds} rounds, alternating;"
        f" at the end, {_load()}"
    )
    print(_table(args.against, rounds))
    return 0
