"""The sandbox's terminal: the daemon's latest plan as a compact live table kept at the bottom
while printed story lines land above it (nothing at all when the output is not a terminal); the
logs in their file, on stderr only with --verbose, which also follows the other processes' log
files."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from rainbowd.core.model import Plan
from rainbowd.logs import get_logger
from rainbowd_sandbox.runner import SandboxOptions, sandbox_logging
from rainbowd_sandbox.terminal import LiveTable, LogFollower
from tests.unit.test_status_command import sample_plan

WITHIN = 30.0


def test_story_lines_print_above_the_table_which_follows_the_plan() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=120)
    plans: list[Plan | None] = [None]
    table = LiveTable(lambda: plans[-1], "http://127.0.0.1:1234/", console=console)
    table.start()
    try:
        console.print("story: 1. deploy color #aaaaaa")
        plans.append(sample_plan())
        console.print("story: 2. open a TCP connection")
    finally:
        table.stop()
    raw = out.getvalue()
    assert "\x1b[48;2;187;187;187m" in raw  # the swatch of #bbbbbb
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "rainbowd, live: http://127.0.0.1:1234/" in text
    assert "no plan yet" in text
    assert text.index("story: 1.") < text.rindex("bbbbbb")
    assert "NOTE" not in text and "NAMESPACE" not in text  # compact


def test_nothing_is_drawn_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    table = LiveTable(sample_plan, "http://x/", console=Console(file=out, force_terminal=False))
    table.start()
    table.stop()
    assert out.getvalue() == ""


def test_with_verbose_the_log_files_are_followed_line_by_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    shown: list[str] = []
    follower = LogFollower([logs / "*.log", tmp_path / "prometheus.log"], shown.append)
    (logs / "etcd.log").write_text("started\nhalf a li")
    follower.read()
    assert shown == ["[etcd] started\n"]
    with (logs / "etcd.log").open("a") as file:
        file.write("ne\n")
    # A file that appears later is followed too.
    (tmp_path / "prometheus.log").write_text("ready\n")
    (logs / "kube-apiserver.log").write_bytes(b"serving \xff\n")
    follower.read()
    assert shown[1:] == [
        "[etcd] half a line\n",
        "[kube-apiserver] serving \ufffd\n",
        "[prometheus] ready\n",
    ]
    follower.read()
    assert len(shown) == 4


def test_the_follower_thread_reads_on_until_stopped(tmp_path: Path) -> None:
    shown: list[str] = []
    follower = LogFollower([tmp_path / "*.log"], shown.append, interval=0.01)
    follower.start()
    (tmp_path / "kwok.log").write_text("one\n")
    deadline = time.monotonic() + WITHIN
    while not shown:
        assert time.monotonic() < deadline, "the follower read nothing"
        time.sleep(0.01)
    # Written just before the stop: the last read still finds it.
    with (tmp_path / "kwok.log").open("a") as file:
        file.write("two\n")
    follower.stop()
    assert shown == ["[kwok] one\n", "[kwok] two\n"]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger as pytest set it up, restored after a test replaces its handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("verbose", [False, True])
def test_logs_go_to_their_file_and_with_verbose_to_stderr_too(
    verbose: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rainbowd.log"
    with sandbox_logging(SandboxOptions(verbose=verbose), path):
        log = get_logger("rainbowd.daemon.reconciling")
        for _ in range(3):
            log.info("cycle finished", states="live=1")
        log.info("action applied", color="aaaaaa")
        log.error("rainbowd failed")
    in_file = path.read_text()
    on_stderr = capsys.readouterr().err
    assert in_file.count("cycle finished") == 3
    assert "action applied" in in_file and "rainbowd failed" in in_file
    assert "rainbowd failed" in on_stderr
    if verbose:
        # An unchanged cycle is said once, not every second.
        assert on_stderr.count("cycle finished") == 1
        assert "action applied" in on_stderr
    else:
        assert "cycle finished" not in on_stderr and "action applied" not in on_stderr
