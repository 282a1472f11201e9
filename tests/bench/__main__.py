"""Runs every benchmark: each tests/bench/bench_*.py module's `main()`, in name order.
`compare --against <ref> [names]` runs them on a baseline git ref and on this tree, side by
side (tests/bench/compare.py). A name that is another module of tests/bench (`profile_cycle`)
runs it, with the arguments after colons (`profile_cycle:10:10000:moving`).

Benchmarks print their numbers; none asserts on time (a shared machine would make that flaky).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the benchmarks whose module name contains any of `argv` (all when empty)."""
    from tests.bench import compare

    if argv[:1] == ["compare"]:
        return compare.main(argv[1:])
    scripts = [found for found in map(compare.script, argv) if found is not None]
    for script, *args in scripts:
        # A module that is not a benchmark (profile_cycle), with its arguments.
        print(f"== {script}", flush=True)
        sys.argv = [script, *args]
        importlib.import_module(f"{__package__}.{script}").main()
    argv = [name for name in argv if compare.script(name) is None]
    if scripts and not argv:
        return 0
    here = Path(__file__).parent
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(here)])
        if info.name.startswith("bench_") and (not argv or any(a in info.name for a in argv))
    )
    if not names:
        print(f"no benchmark matches {' '.join(argv)}", file=sys.stderr)
        return 1
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"{__package__}.{name}")
        module.main()
        print(f"== {name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
