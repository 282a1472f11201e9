"""`python -m tests.soak --minutes N`: one soak, its figures printed; exit 1 on a wrongful
action or a structure past its limit."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rainbowd.logs import setup_logging
from tests.soak.running import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to churn (30)")
    parser.add_argument("--seed", type=int, help="the churn's random seed (default: fresh)")
    parser.add_argument(
        "--sample-every",
        type=float,
        help="seconds between samples of rainbowd's figures (60; 10 under 10 minutes)",
    )
    parser.add_argument("--keep", type=Path, help="keep the logs in this folder")
    args = parser.parse_args(argv)
    setup_logging("WARNING", "text")
    every = args.sample_every or (60.0 if args.minutes >= 10 else 10.0)
    outcome = asyncio.run(soak(args.minutes, seed=args.seed, sample_every=every, keep=args.keep))
    print("\n".join(outcome.report), flush=True)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
