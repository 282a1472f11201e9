"""The README's scale table from the JSON bench_scale writes: `python -m tests.bench.table`."""

from __future__ import annotations

import json

from tests.bench.bench_scale import RESULTS, ratio, rows, shown


def main() -> None:
    results = sorted(
        (json.loads(p.read_text()) for p in RESULTS.glob("scale-*.json")),
        key=lambda r: r["deployments"],
    )
    for result in results:
        loads = "; ".join(
            f"{name} ran at a load average of {figures['load_average_start'][0]:g}"
            f"-{figures['load_average_end'][0]:g}"
            for name, figures in ((n, result.get(n, {})) for n in ("rainbowd", "baseline"))
            if "load_average_start" in figures and "load_average_end" in figures
        )
        print(
            f"**{result['deployments']:,} Deployments** ({result['series']:,} series;"
            f" {result['date']}, {result['machine']}; {result['interval_s']:g} s cycles"
            f"{'; ' + loads if loads else ''}):\n"
        )
        print("| | rainbowd | polling baseline | baseline / rainbowd |")
        print("|---|---|---|---|")
        for name, r, b in rows(result):
            print(f"| {name} | {shown(r)} | {shown(b)} | {ratio(r, b)} |")
        answer = result["answer"]
        print(
            f"| connections answer, KB (gzipped) | {answer['summary']['kb']}"
            f" ({answer['summary']['kb_gzipped']}) | per-pod shape: {answer['per_pod']['kb']}"
            f" ({answer['per_pod']['kb_gzipped']}) |"
            f" {ratio(answer['summary']['kb'], answer['per_pod']['kb'])} |"
        )
        for name in ("rainbowd", "baseline"):
            if "incomplete" in result.get(name, {}):
                print(f"\n{name} did not finish: {result[name]['incomplete']}.")
        print()


if __name__ == "__main__":
    main()
