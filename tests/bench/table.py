"""The README's scale table from the JSON bench_scale writes: `python -m tests.bench.table`."""

from __future__ import annotations

import json

from tests.bench.bench_scale import RESULTS, ratio, rows


def main() -> None:
    results = sorted(
        (json.loads(p.read_text()) for p in RESULTS.glob("scale-*.json")),
        key=lambda r: r["deployments"],
    )
    for result in results:
        print(
            f"**{result['deployments']:,} Deployments** ({result['series']:,} series;"
            f" {result['date']}, {result['machine']}; {result['interval_s']:g} s cycles):\n"
        )
        print("| | rainbowd | polling baseline | baseline / rainbowd |")
        print("|---|---|---|---|")
        for name, r, b in rows(result):
            print(f"| {name} | {r} | {'' if b is None else b} | {ratio(r, b)} |")
        answer = result["answer"]
        print(
            f"| connections answer, KB (gzipped) | {answer['summary']['kb']}"
            f" ({answer['summary']['kb_gzipped']}) | per-pod shape: {answer['per_pod']['kb']}"
            f" ({answer['per_pod']['kb_gzipped']}) |"
            f" {ratio(answer['summary']['kb'], answer['per_pod']['kb'])} |"
        )
        print()


if __name__ == "__main__":
    main()
