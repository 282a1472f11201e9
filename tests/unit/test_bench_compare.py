"""The before/after benchmark mode (tests/bench/compare.py) reads the figures the benchmarks
print, by what they measure: a median where there is one, else the single figure; and runs the
modules that are not benchmarks (profile_cycle) with their arguments."""

from __future__ import annotations

from tests.bench.compare import figures, script


def test_figures_are_read_from_what_the_benchmarks_print() -> None:
    output = "\n".join(
        [
            "== bench_cycle",
            "cycle: first (cold planner) 1438.4 ms",
            "cycle: steady state, rainbowd's CPU alone (Prometheus' work excluded): median 36.1 ms,"
            " p95 40.3 ms, min 32.8 ms over 20 runs",
            "planner: cold, plan() (every app planned): median 316.7 ms, p95 379.1 ms, min 290.1 "
            "ms over 30 runs; target: median <= 120 ms",
            "planner: cold plan(): target NOT met on this run",
            "== bench_cycle: done in 30.5 s",
        ]
    )
    assert figures(output) == {
        "cycle: first (cold planner)": 1438.4,
        "cycle: steady state, rainbowd's CPU alone (Prometheus' work excluded)": 36.1,
        "planner: cold, plan() (every app planned)": 316.7,
    }


def test_a_module_that_is_not_a_benchmark_is_named_with_its_arguments() -> None:
    assert script("profile_cycle") == ["profile_cycle"]
    assert script("profile_cycle:8:10000:moving") == ["profile_cycle", "8", "10000", "moving"]
    # Benchmarks, and names of no module, are left to the benchmark runner's matching.
    assert script("bench_cycle") is None
    assert script("planner") is None
    assert script("no_such_module:1") is None
    figures_line = "profile_cycle: moving: median 241.9 ms CPU per cycle (min 213.1) over 8"
    assert figures(figures_line) == {"profile_cycle: moving": 241.9}
