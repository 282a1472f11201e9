"""The suite itself, run side by side as `make test` runs it: the real node's tests all on one
worker (they share one node per machine), and the run's summaries printed once, by the
controller, whichever worker ran the tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = (
    "tests/node/test_machine.py::test_the_snapshot_check_names_each_change",
    "tests/node/test_machine.py::test_the_image_key_follows_every_input_and_nothing_else",
    "tests/node/test_machine.py::test_the_node_check_and_sandbox_node_say_what_is_missing",
)
OTHERS = (
    "tests/unit/test_buildcache.py::test_the_cache_lives_in_rainbowd_cache_else_the_xdg_cache_else_home",
    "tests/unit/test_buildcache.py::test_a_built_entry_is_verified_and_used_without_building_again",
    "tests/unit/test_buildcache.py::test_pruning_spares_the_entries_used_within_the_hour",
)


def test_the_real_node_tests_share_one_worker_and_the_summary_is_printed_once() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *NODE, *OTHERS],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    ran = dict(
        (test, worker)
        for worker, test in re.findall(r"^\[(gw\d+)\] \[ *\d+%\] PASSED (\S+)", out, re.M)
    )
    assert sorted(ran) == sorted(NODE + OTHERS), out
    assert len({ran[test] for test in NODE}) == 1, ran
    assert out.count("time per folder") == 1, out
    assert re.search(r"^node +[\d.]+s +3 tests$", out, re.M), out
    assert re.search(r"^unit +[\d.]+s +3 tests$", out, re.M), out
