"""`rainbowd sandbox` as a user runs it: a child process that starts the control plane,
Prometheus, the demo pods and the daemon, plays the seed's story, and leaves no process behind
when it ends or is interrupted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The story waits out minRetiredAge and drainHold (shortened below); the rest is starting the
# control plane and rolling out two colors on two shared, busy cores.
STORY_DEADLINE = 600.0
START_DEADLINE = 240.0
STOP_DEADLINE = 90.0
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "prometheus",
    "demo_app",
    "rainbowd",
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]


def _name(argv: list[str]) -> str:
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].split(".")[0]
    return os.path.basename(argv[0])


def sandbox_processes(data_dir: Path) -> dict[int, str]:
    """Every process on the machine whose command line names this sandbox's data folder, by
    pid: each component gets a path under it, and the sandbox itself its --data-dir."""
    marker = str(data_dir)
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if state in ("Z", "X"):
            continue  # dead, waiting to be reaped
        if any(marker in arg for arg in argv):
            found[int(entry.name)] = _name([a for a in argv if a])
    return found


@dataclass
class Sandbox:
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def logs(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, pattern: str, *, within: float) -> re.Match[str]:
        deadline = time.monotonic() + within
        while True:
            found = re.search(pattern, self.output(), re.MULTILINE)
            if found is not None:
                return found
            if self.process.poll() is not None:
                pytest.fail(
                    f"the sandbox exited ({self.process.returncode}) before {pattern!r}:\n"
                    f"{self.output()}\n{self.logs()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} in the sandbox's output after {within:g}s")
            time.sleep(0.2)


def launch_sandbox(
    argv: list[str], folder: Path, *, cwd: Path | str = ROOT, env: dict[str, str] | None = None
) -> Sandbox:
    """`argv` (a `rainbowd sandbox` command) started, its output in files under `folder`."""
    out, err = folder / "sandbox.out", folder / "sandbox.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd, env=env
        )
    return Sandbox(process, out, err)


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def start(*args: str) -> Sandbox:
        sandbox = launch_sandbox([sys.executable, "-m", "rainbowd", "sandbox", *args], tmp_path)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.process.kill()
            sandbox.process.wait(30)
        if sandbox.process.returncode != 0:
            print(f"sandbox stdout:\n{sandbox.output()}\nsandbox stderr:\n{sandbox.logs()}")


def wait_exit(sandbox: Sandbox, within: float) -> int:
    try:
        return sandbox.process.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sandbox still runs {within:g}s later:\n{sandbox.output()}")


def test_story_plays_through_and_leaves_nothing_running(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    sandbox = start_sandbox(
        "--story",
        "--exit-after-story",
        f"--data-dir={data_dir}",
        "--min-retired-age=8s",
        "--drain-hold=3s",
    )
    code = wait_exit(sandbox, STORY_DEADLINE)
    out = sandbox.output()
    assert code == 0, out

    # What a user reads: the page first, where the logs are, where everything is...
    assert re.match(r"rainbowd's live page: http://127\.0\.0\.1:\d+/ ", out), out[:300]
    assert f"rainbowd and the sandbox: {data_dir}/rainbowd.log" in out
    assert f"export KUBECONFIG={data_dir}/controlplane/kubeconfig" in out
    assert re.search(r"Prometheus: +http://127\.0\.0\.1:\d+", out)
    assert re.search(r"rainbowd /status: +http://127\.0\.0\.1:\d+/status", out)
    assert re.search(r"rainbowd /metrics: +http://127\.0\.0\.1:\d+/metrics", out)
    assert re.search(r"telnet 127\.0\.0\.1 \d+", out)
    assert "rainbowd sandbox deploy" in out

    # ...and each step of the story, in order.
    colors = {
        step: re.search(rf"^story: {step}\. deploy [^#]*#([0-9a-f]{{6}})", out, re.MULTILINE)
        for step in (1, 3, 8)
    }
    assert all(colors.values()), out
    old_color, new_color, fix_color = (m.group(1) for m in colors.values() if m is not None)
    steps = [
        f"connection 1 reads: The color is #{old_color}",
        f"a new connection (2) reads #{new_color}; connection 1 still reads #{old_color}",
        f"#{old_color} held while connected: state draining",
        "close connection 1",
        f"rainbow-deploys-{old_color} scaled to 0 replicas by rainbowd; its Event: ScaledDown: "
        "scale rainbow-deploys-",
        f"the pods of #{old_color} are gone",
        "rainbowd rollback",
        f"rainbow-deploys-{old_color} is back at 2 replicas; a new connection (3) reads "
        f"#{old_color}; connection 2 still reads #{new_color}",
        f"a new connection (4) reads #{fix_color}",
        f"rainbow-deploys-{old_color} deleted by rainbowd; its Event: Deleted: ",
        f"rainbow-deploys-{new_color} deleted by rainbowd; its Event: Deleted: ",
        f"#{fix_color} untouched: live, 2/2 replicas, connection 4 still reads #{fix_color}",
        "the story is over",
        "sandbox stopped",
    ]
    at = 0
    for step in steps:
        found = out.find(step, at)
        assert found >= 0, f"{step!r} missing (or out of order) in:\n{out}"
        at = found + len(step)
    # It was scaled for having drained, not by a forced rule.
    assert re.search(rf"its Event: ScaledDown: .*{old_color}.*drained", out), out
    held = re.search(r"held while connected: .*connections (\d+), replicas (\d+)/(\d+)", out)
    assert held is not None and int(held.group(1)) >= 1 and held.group(2) == held.group(3) == "2"

    # Every demo process of the old color stopped when rainbowd scaled it down, both times.
    stopped = re.findall(rf"pod rainbow-deploys-{old_color}-\S+ \(#{old_color}\) stopped", out)
    assert len(stopped) == 4, out
    # The daemon acted on the old colors only, for the reasons the story tells.
    # The logs went to their file, not through the story.
    assert "cycle finished" not in sandbox.logs()
    logs = (data_dir / "rainbowd.log").read_text()
    acted = re.findall(r"action applied .*color=(\w+) .*action=(\w+) reason=([\w-]+)", logs)
    assert {(c, a) for c, a, _ in acted if a in ("scale", "delete")} == {
        (old_color, "scale"),
        (old_color, "delete"),
        (new_color, "delete"),
    }, logs
    assert not [c for c, a, _ in acted if c == fix_color and a in ("scale", "delete")], logs

    assert sandbox_processes(data_dir) == {}


def test_sigint_stops_a_plain_sandbox_with_nothing_left(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    sandbox = start_sandbox(f"--data-dir={data_dir}", "--replicas=1")
    sandbox.wait_for(r"^rainbowd sandbox is running$", within=START_DEADLINE)
    first = sandbox.wait_for(
        r"^pod rainbow-deploys-([0-9a-f]{6})-\S+ \(#\1\) serving", within=START_DEADLINE
    )
    kubeconfig = sandbox.wait_for(r"^  export KUBECONFIG=(\S+)$", within=5).group(1)

    # A color shipped from another terminal gets its pod process and the Service.
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "rainbowd",
            "sandbox",
            "deploy",
            "c0ffee",
            f"--kubeconfig={kubeconfig}",
            "--replicas=1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=START_DEADLINE,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "Service rainbow-deploys now selects #c0ffee" in deploy.stdout
    sandbox.wait_for(r"^pod rainbow-deploys-c0ffee-\S+ \(#c0ffee\) serving", within=60)

    # Every component runs, and the listing sees each of them: the final check means something.
    running = set(sandbox_processes(data_dir).values())
    assert set(COMPONENTS) <= running, running
    assert first.group(1) != "c0ffee"

    sandbox.process.send_signal(signal.SIGINT)
    code = wait_exit(sandbox, STOP_DEADLINE)
    assert code == 0, sandbox.output()
    out = sandbox.output()
    assert "stopping the sandbox" in out and "sandbox stopped" in out
    assert sandbox_processes(data_dir) == {}
