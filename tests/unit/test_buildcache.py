"""The per-user build cache: where it lives, keys that follow their inputs, entries trusted only
while their checksums match, a damaged entry rebuilt (only what is damaged), and two processes
asking for one entry at once building it once. Small real files, real locks, real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import BIN_DIR_ENV, BINARIES
from rainbowd_sandbox.node import NODE_BINARIES
from rainbowd_sandbox.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
ALL_BINARIES = (*BINARIES, *NODE_BINARIES)
"""What tests/cluster/build makes: the control plane's and the real node's."""
_WITHIN = 120.0
"""Seconds for a process to reach a point, on two busy shared cores."""

BUILDER = """
import sys, time
from pathlib import Path
scratch, log, release = Path(sys.argv[-1]), Path(sys.argv[1]), Path(sys.argv[2])
with log.open("a") as f:
    f.write(f"build {sorted(p.name for p in scratch.rglob('*') if p.is_file())}\\n")
deadline = time.monotonic() + 120
while not release.exists():
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.05)
(scratch / "bin").mkdir(exist_ok=True)
for name in ("a", "b"):
    if not (scratch / "bin" / name).exists():
        (scratch / "bin" / name).write_bytes(name.encode() * 1000)
        (scratch / "bin" / name).chmod(0o755)
"""


def builder(tmp_path: Path) -> tuple[list[str], Path, Path]:
    """A build command for `buildcache ensure`: it logs what it found in its scratch folder,
    waits for the release file, then writes what is missing."""
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    log, release = tmp_path / "builds.log", tmp_path / "release"
    return [sys.executable, str(script), str(log), str(release)], log, release


def ensure_process(folder: Path, command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rainbowd_sandbox.buildcache",
            "ensure",
            str(folder),
            "--",
            *command,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def builds(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_cache_lives_in_rainbowd_cache_else_the_xdg_cache_else_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAINBOWD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert buildcache.cache_root() == tmp_path / "home" / ".cache" / "rainbowd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert buildcache.cache_root() == tmp_path / "xdg" / "rainbowd"
    monkeypatch.setenv("RAINBOWD_CACHE", str(tmp_path / "mine"))
    assert buildcache.cache_root() == tmp_path / "mine"


@pytest.fixture
def cluster_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A copy of tests/cluster under `tmp_path` (the root to key entries by), the cache beside."""
    monkeypatch.setenv("RAINBOWD_CACHE", str(tmp_path / "cache"))
    shutil.copytree(ROOT / "tests" / "cluster", tmp_path / "tests" / "cluster")
    return tmp_path


def test_an_entry_key_follows_the_versions_the_module_and_the_build_script(
    cluster_copy: Path,
) -> None:
    tmp_path = cluster_copy
    first = buildcache.entry("controlplane", root=tmp_path)
    assert first.parent == tmp_path / "cache" / "controlplane"
    assert first.name.startswith("v1.")
    assert buildcache.entry("controlplane", root=tmp_path) == first
    seen = {first}
    for name in ("versions", "go.sum", "build", "cmd/pause/main.go"):
        with (tmp_path / "tests" / "cluster" / name).open("a") as handle:
            handle.write("\n")
        seen.add(buildcache.entry("controlplane", root=tmp_path))
    assert len(seen) == 5
    assert buildcache.entry("tools", root=tmp_path).parent == tmp_path / "cache" / "tools"


def test_thanos_is_an_entry_of_its_own_that_never_moves_the_control_plane(
    cluster_copy: Path,
) -> None:
    tmp_path = cluster_copy
    controlplane = buildcache.entry("controlplane", root=tmp_path)
    thanos = buildcache.entry("thanos", root=tmp_path)
    assert thanos.parent == tmp_path / "cache" / "thanos"
    assert thanos.name.startswith("v0.")
    seen = {thanos}
    for name in ("go.mod", "go.sum", "build"):
        with (tmp_path / "tests" / "cluster" / "thanos" / name).open("a") as handle:
            handle.write("\n")
        seen.add(buildcache.entry("thanos", root=tmp_path))
    assert len(seen) == 4
    assert buildcache.entry("controlplane", root=tmp_path) == controlplane


@pytest.mark.parametrize(("kind", "version"), [("keda", "v2.21."), ("argo-rollouts", "v1.10.")])
def test_a_controllers_entry_is_keyed_apart_from_the_control_plane(
    cluster_copy: Path, kind: str, version: str
) -> None:
    tmp_path = cluster_copy
    plane, entry = (buildcache.entry(k, root=tmp_path) for k in ("controlplane", kind))
    assert entry.parent == tmp_path / "cache" / kind
    assert entry.name.startswith(version)
    seen = {entry}
    for name in ("build", "versions"):
        with (tmp_path / "tests" / "cluster" / kind / name).open("a") as handle:
            handle.write("\n")
        seen.add(buildcache.entry(kind, root=tmp_path))
    assert len(seen) == 3
    assert buildcache.entry("controlplane", root=tmp_path) == plane


def test_a_built_entry_is_verified_and_used_without_building_again(tmp_path: Path) -> None:
    folder = tmp_path / "kind" / "entry"
    made: list[Path] = []

    def build(scratch: Path) -> None:
        made.append(scratch)
        (scratch / "bin").mkdir()
        (scratch / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
        (scratch / "bin" / "tool").chmod(0o755)

    assert buildcache.ensure(folder, build)
    assert buildcache.problems(folder) == []
    assert not buildcache.ensure(folder, build)
    assert len(made) == 1
    # Nothing of the build is left beside the entry but its lock.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["entry", "entry.lock"]


@pytest.mark.parametrize(
    "damage",
    ["flipped byte", "truncated", "removed", "not executable", "no manifest", "bad manifest"],
)
def test_a_damaged_entry_is_rebuilt_not_trusted(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "entry"
    command, log, release = builder(tmp_path)
    release.touch()
    assert ensure_process(folder, command).wait(timeout=_WITHIN) == 0
    binary = folder / "bin" / "a"
    good = binary.read_bytes()
    if damage == "flipped byte":
        binary.write_bytes(good[:10] + b"X" + good[11:])
    elif damage == "truncated":
        binary.write_bytes(good[:100])
    elif damage == "removed":
        binary.unlink()
    elif damage == "not executable":
        binary.chmod(0o644)
    elif damage == "no manifest":  # a build cut short before its last step
        (folder / buildcache.MANIFEST).unlink()
    else:
        (folder / buildcache.MANIFEST).write_text('{"bin/a": ')
    assert buildcache.problems(folder) != []
    done = subprocess.run(
        [sys.executable, "-m", "rainbowd_sandbox.buildcache", "verify", str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1, done.stderr

    assert ensure_process(folder, command).wait(timeout=_WITHIN) == 0
    assert buildcache.problems(folder) == []
    assert binary.read_bytes() == good
    assert os.access(binary, os.X_OK)
    second = builds(log)[1]
    if damage in ("no manifest", "bad manifest"):
        assert second == "build []"  # nothing can be trusted: all of it is built again
    else:
        assert second == "build ['b']"  # the intact file is kept; the damaged one rebuilt


def test_two_processes_asking_for_one_entry_build_it_once(tmp_path: Path) -> None:
    folder = tmp_path / "entry"
    command, log, release = builder(tmp_path)
    first = ensure_process(folder, command)
    wait_until(lambda: True if builds(log) else None, timeout=_WITHIN, what="the first build")
    second = ensure_process(folder, command)
    # The second process waits on the entry's lock while the first builds.
    assert second.stderr is not None
    waiting = second.stderr.readline()
    assert "another process holds" in waiting and "entry.lock" in waiting
    assert not folder.exists()
    release.touch()
    assert first.wait(timeout=_WITHIN) == 0
    assert second.wait(timeout=_WITHIN) == 0
    assert builds(log) == ["build []"]
    assert buildcache.problems(folder) == []


def test_a_build_killed_midway_is_cleared_by_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "entry"
    command, log, release = builder(tmp_path)
    killed = ensure_process(folder, command)
    wait_until(lambda: True if builds(log) else None, timeout=_WITHIN, what="the first build")
    killed.kill()  # SIGKILL: no cleanup runs
    killed.wait(timeout=_WITHIN)
    assert [p.name for p in tmp_path.glob(".entry.*.partial")] != []

    def build(scratch: Path) -> None:
        (scratch / "bin").write_text("built")

    assert buildcache.ensure(folder, build)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".entry")) == []
    assert buildcache.problems(folder) == []
    release.touch()  # the killed build's own builder finds its folder gone, and exits


def test_a_build_that_fails_leaves_no_entry_and_no_scratch(tmp_path: Path) -> None:
    folder = tmp_path / "entry"

    def build(scratch: Path) -> None:
        (scratch / "half").write_bytes(b"half written")
        raise buildcache.CacheError("the build failed")

    with pytest.raises(buildcache.CacheError, match="the build failed"):
        buildcache.ensure(folder, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]


def test_pruning_spares_the_entries_used_within_the_hour(tmp_path: Path) -> None:
    now = time.time()
    # Minutes since each entry was last used: four recent, one more recent beyond those four,
    # and two unused for two hours.
    ages = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 50, "f": 120, "g": 130}
    for name, minutes in ages.items():
        folder = tmp_path / f"rainbowd-{name}"
        folder.mkdir()
        (folder / "image.oci.tar").write_bytes(name.encode())
        buildcache.seal(folder)
        os.utime(folder / buildcache.MANIFEST, (now - 60 * minutes, now - 60 * minutes))
    buildcache.prune(tmp_path, "rainbowd-*", keep=4, unused_for=3600)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        f"rainbowd-{name}" for name in "abcde"
    ]
    # A cache hit marks the entry used now.
    assert not buildcache.ensure(tmp_path / "rainbowd-e", lambda scratch: None)
    assert (tmp_path / "rainbowd-e" / buildcache.MANIFEST).stat().st_mtime >= now


def _build_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "tests" / "cluster" / "build"), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=_WITHIN,
        check=False,
    )


def test_the_build_script_uses_verified_entries_as_they_are(tmp_path: Path) -> None:
    """A machine that built before: the script finds both entries verified and builds nothing
    (here the entries hold stand-ins; a build would replace them); the fixtures look where it
    says the binaries are."""
    env = {k: v for k, v in os.environ.items() if k != BIN_DIR_ENV}
    env["RAINBOWD_CACHE"] = str(tmp_path / "cache")
    done = _build_script("--print-bin-dir", env=env)
    assert done.returncode == 0, done.stderr
    bin_dir = Path(done.stdout.strip())
    assert bin_dir.parent.parent == tmp_path / "cache" / "controlplane"
    for folder, names in (
        (bin_dir.parent, [f"bin/{name}" for name in ALL_BINARIES]),
        (entry_of(env, "tools"), ["helm", "prometheus-operator/.complete"]),
    ):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"stand-in {name}\n")
            (folder / name).chmod(0o755)
        buildcache.seal(folder)
    done = _build_script(env=env)
    assert done.returncode == 0, done.stderr
    assert f"built and verified: {bin_dir}" in done.stderr
    assert (bin_dir / "kube-apiserver").read_text() == "stand-in bin/kube-apiserver\n"
    # RAINBOWD_CONTROLPLANE_BIN still names a folder of the user's.
    env[BIN_DIR_ENV] = str(tmp_path / "mine")
    assert _build_script("--print-bin-dir", env=env).stdout.strip() == str(tmp_path / "mine")


def entry_of(env: dict[str, str], kind: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "rainbowd_sandbox.buildcache", "entry", kind],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return Path(done.stdout.strip())


def test_the_build_script_prunes_old_keys_of_its_kind_and_version(tmp_path: Path) -> None:
    day_ago = time.time() - 2 * 86400
    for name, used in (("v1.1-aaa", day_ago - 30), ("v1.1-bbb", day_ago), ("v1.1-ccc", None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "bin").write_text(name)
        buildcache.seal(folder)
        if used is not None:
            os.utime(folder / buildcache.MANIFEST, (used, used))
    (tmp_path / "v1.2-ddd").mkdir()  # another version: not this entry's kind of sibling
    subprocess.run(
        [sys.executable, "-m", "rainbowd_sandbox.buildcache", "prune", str(tmp_path / "v1.1-ccc")],
        cwd=ROOT,
        check=True,
        timeout=_WITHIN,
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "v1.1-bbb",
        "v1.1-ccc",
        "v1.2-ddd",
    ]


def test_only_a_controller_kind_is_built_by_a_script_of_its_own(cluster_copy: Path) -> None:
    with pytest.raises(buildcache.CacheError, match="not built by a script of its own"):
        buildcache.ensure_addon("controlplane", root=cluster_copy)


def test_a_background_build_holds_its_locks_from_the_start_and_a_test_waits_for_it(
    cluster_copy: Path,
) -> None:
    """`setup` builds what only some tests need in a detached process: the locks are taken
    before it returns, so a test asking for an entry meanwhile waits for that build (it never
    starts a second one), and a failed build leaves the entry to whoever needs it next."""
    command, log, release = builder(cluster_copy)
    for kind in ("keda", "argo-rollouts"):  # stand-in build scripts, same calling convention
        script = cluster_copy / "tests" / "cluster" / kind / "build"
        fails = "exit 3" if kind == "argo-rollouts" else f'exec {" ".join(command)} "$1"'
        script.write_text(f"#!/usr/bin/env bash\n{fails}\n")
    background_log = cluster_copy / "addons.log"
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from rainbowd_sandbox import buildcache; "
            "print(buildcache.build_in_background(['keda', 'argo-rollouts'], Path(sys.argv[1]), "
            "root=Path(sys.argv[2])))",
            str(background_log),
            str(cluster_copy),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=_WITHIN,
        check=True,
    )
    # It returned while its build waits for the release: the build runs detached.
    assert started.stdout.strip() == "['keda', 'argo-rollouts']"
    keda = buildcache.entry("keda", root=cluster_copy)
    assert buildcache.problems(keda) == [f"{keda}: missing"]
    never = [sys.executable, "-c", "import sys; sys.exit('built a second time')"]
    waiter = ensure_process(keda, never)
    assert waiter.stderr is not None
    assert "another process holds" in waiter.stderr.readline()
    release.touch()
    assert waiter.wait(timeout=_WITHIN) == 0
    assert builds(log) == ["build []"]
    assert buildcache.problems(keda) == []
    # The failed one: its lock released, said in the log, built by whoever asks next.
    argo = buildcache.entry("argo-rollouts", root=cluster_copy)
    wait_until(
        lambda: True if "building argo-rollouts failed" in background_log.read_text() else None,
        timeout=_WITHIN,
        what="the failed build in the log",
    )
    assert "built keda in" in background_log.read_text()
    assert buildcache.problems(argo) == [f"{argo}: missing"]
    assert release.exists()  # the stand-in build will not wait this time
    retried = ensure_process(argo, command)
    assert retried.wait(timeout=_WITHIN) == 0
    assert buildcache.problems(argo) == []
    # Nothing is missing now: nothing is started.
    again = buildcache.build_in_background(
        ["keda", "argo-rollouts"], background_log, root=cluster_copy
    )
    assert again == []
