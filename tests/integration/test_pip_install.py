"""`pip install rainbowd` alone: a fresh venv with the runtime dependencies only (no dev
extras, no sandbox and none of its dependencies) gives working commands, and the real kubectl
finds the plugin it installs; with the sandbox package (sandbox/) added, `rainbowd sandbox` runs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import BIN_DIR_ENV, ControlPlane, default_binaries_dir
from tests.e2e.test_sandbox import (
    START_DEADLINE,
    STOP_DEADLINE,
    launch_sandbox,
    sandbox_processes,
    wait_exit,
)

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = (
    "run",
    "plan",
    "status",
    "deploy",
    "rollback",
    "promote",
    "hold",
    "release",
    "history",
    "dashboard",
    "check-policy",
    "sandbox",
)
# Through kubectl: every command but the daemon's, the policy check and the sandbox.
PLUGIN_COMMANDS = tuple(c for c in COMMANDS if c not in ("run", "check-policy", "sandbox"))
DEV_ONLY = ("pytest", "hypothesis", "mypy", "ruff")
# The sandbox package and what only it needs.
SANDBOX_ONLY = ("rainbowd_sandbox", "cryptography", "rainbowd.sandbox")
SANDBOX = ROOT / "sandbox"
PIP_TIMEOUT = 900


def _requirements(project_dir: Path) -> list[str]:
    project = tomllib.loads((project_dir / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of the runtime dependencies and the sandbox's (and setuptools, to build both),
    downloaded once per set of requirements into the build cache, so a session installs offline."""
    requirements = _requirements(ROOT) + [
        r for r in _requirements(SANDBOX) if r.split(">")[0].split("=")[0] != "rainbowd"
    ]
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    folder = buildcache.cache_root() / "runtime-wheels" / key

    def download(scratch: Path) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--dest",
                str(scratch),
                "setuptools>=77",
                "wheel",
                *requirements,
            ],
            check=True,
            timeout=PIP_TIMEOUT,
        )

    buildcache.ensure(folder, download)
    return folder


# pip builds a project in its own folder (setuptools' build/ and *.egg-info), so two builds of
# one checkout at once (two test workers, or two runs of the suite) collide there ("File exists").
# One lock per checkout, machine-wide.
BUILD_LOCK = Path(tempfile.gettempdir()) / (
    "rainbowd-build-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12] + ".lock"
)


def _venv(wheelhouse: Path, folder: Path, *projects: Path) -> Path:
    """A venv in `folder` holding `projects` (built from this checkout) and their dependencies."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    with buildcache.locked(BUILD_LOCK, timeout=PIP_TIMEOUT):
        _install(venv, wheelhouse, projects)
    return venv / "bin"


def _install(venv: Path, wheelhouse: Path, projects: tuple[Path, ...]) -> None:
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            *map(str, projects),
        ],
        check=True,
        timeout=PIP_TIMEOUT,
        env={**os.environ, "PIP_FIND_LINKS": str(wheelhouse)},
    )


@pytest.fixture(scope="session")
def runtime_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding rainbowd (built from this checkout) and its runtime dependencies only."""
    yield _venv(wheelhouse, tmp_path_factory.mktemp("runtime"), ROOT)


@pytest.fixture(scope="session")
def sandbox_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding rainbowd and the sandbox package, with their runtime dependencies only."""
    yield _venv(wheelhouse, tmp_path_factory.mktemp("sandbox"), ROOT, SANDBOX)


def _run(
    argv: list[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_the_runtime_venv_has_no_dev_tools_and_no_sandbox(runtime_venv: Path) -> None:
    for module in (*DEV_ONLY, *SANDBOX_ONLY):
        found = _run([str(runtime_venv / "python"), "-c", f"import {module}"], cwd="/")
        assert found.returncode != 0, f"{module} is installed: not a runtime-only venv"
    listed = _run([str(runtime_venv / "python"), "-m", "pip", "list", "--format=freeze"])
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "rainbowd" in names and not {"cryptography", "rainbowd-sandbox"} & names, names
    check = _run([str(runtime_venv / "python"), "-m", "pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_command_works_from_a_runtime_only_install(runtime_venv: Path) -> None:
    top = _run([str(runtime_venv / "rainbowd"), "--help"], cwd="/")
    assert top.returncode == 0, top.stderr
    for command in COMMANDS:
        assert command in top.stdout
        shown = _run([str(runtime_venv / "rainbowd"), command, "--help"], cwd="/")
        assert shown.returncode == 0, f"rainbowd {command} --help: {shown.stderr}"
        assert shown.stdout.startswith(f"usage: rainbowd {command}"), shown.stdout
    # Without the sandbox package, `rainbowd sandbox` says how to get it, whatever it is given.
    for argv in (["sandbox"], ["sandbox", "--node", "--story"], ["sandbox", "deploy", "0ff1ce"]):
        missing = _run([str(runtime_venv / "rainbowd"), *argv], cwd="/")
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "the sandbox is not installed: it is the rainbowd-sandbox package" in missing.stderr
        assert "pip install ./sandbox" in missing.stderr, missing.stderr
        assert "Traceback" not in missing.stdout + missing.stderr, missing.stderr


def test_every_command_and_the_sandbox_work_from_an_install_with_the_sandbox(
    sandbox_venv: Path,
) -> None:
    for command in COMMANDS:
        shown = _run([str(sandbox_venv / "rainbowd"), command, "--help"], cwd="/")
        assert shown.returncode == 0, f"rainbowd {command} --help: {shown.stderr}"
        assert shown.stdout.startswith(f"usage: rainbowd {command}"), shown.stdout
    sandbox = _run([str(sandbox_venv / "rainbowd"), "sandbox", "--help"], cwd="/")
    assert "--story" in sandbox.stdout and "deploy" in sandbox.stdout, sandbox.stdout
    # The sandbox's certificates (the import that once needed a dev-only package) are made.
    pki = _run(
        [
            str(sandbox_venv / "python"),
            "-c",
            "import pathlib, sys, tempfile; from rainbowd_sandbox.certs import write_pki; "
            "d = pathlib.Path(tempfile.mkdtemp()); write_pki(d); print(sorted(p.name for p in "
            "d.iterdir()))",
        ],
        cwd="/",
    )
    assert pki.returncode == 0, pki.stderr
    assert ".crt" in pki.stdout or ".pem" in pki.stdout, pki.stdout


def test_the_live_page_ships_in_the_package(runtime_venv: Path) -> None:
    """The page's files are package data: the installed copy, not this checkout, serves them."""
    script = (
        "import hashlib, rainbowd.web as web; print(web.__file__); "
        "[print(n, hashlib.sha256(web.asset(n)).hexdigest()) for n in ('index.html', *web.ASSETS)]"
    )
    found = _run([str(runtime_venv / "python"), "-c", script], cwd="/")
    assert found.returncode == 0, found.stderr
    where, *lines = found.stdout.splitlines()
    assert not where.startswith(str(ROOT)), where
    static = ROOT / "rainbowd" / "web" / "static"
    shipped = dict(line.split() for line in lines)
    assert shipped == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in static.iterdir()
    }, shipped


@pytest.mark.cluster_full
def test_deploy_and_history_from_a_runtime_only_install(
    runtime_venv: Path, cluster_full: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    template = (ROOT / "k8s" / "demo" / "app.yaml").read_text()
    # Another NodePort than the e2e tests': node ports are cluster-wide.
    (tmp_path / "app.yaml").write_text(template.replace("3108", "3208"))
    env = {**os.environ, "KUBECONFIG": str(cluster_full.kubeconfig)}
    deploy = _run(
        [
            str(runtime_venv / "rainbowd"),
            "deploy",
            "-n",
            namespace,
            "--app",
            "rainbow-deploys",
            "-f",
            str(tmp_path / "app.yaml"),
            "--color",
            "3c3fdc",
            "--timeout",
            "3m",
        ],
        cwd="/",
        env=env,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "Service rainbow-deploys created, selecting #3c3fdc" in deploy.stdout
    history = _run(
        [str(runtime_venv / "rainbowd"), "history", "-n", namespace, "--app", "rainbow-deploys"],
        cwd="/",
        env=env,
    )
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[1].split()[:2] == ["3c3fdc", "live"], history.stdout


@pytest.mark.prometheus
def test_the_sandbox_from_an_install_of_its_package(sandbox_venv: Path, tmp_path: Path) -> None:
    rainbowd = str(sandbox_venv / "rainbowd")
    env = {k: v for k, v in os.environ.items() if k != BIN_DIR_ENV}
    # No checkout, so no control-plane binaries where a checkout builds them: what it needs and
    # how to get it, by name, and nothing started.
    bare = _run([rainbowd, "sandbox"], cwd="/", env=env)
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert f"${BIN_DIR_ENV} is not set" in bare.stdout and "make setup" in bare.stdout, bare.stdout
    node = _run([rainbowd, "sandbox", "--node"], cwd="/", env=env)
    assert node.returncode == 1, node.stdout + node.stderr
    assert "--node: runs from a rainbowd checkout" in node.stderr, node.stderr
    for run in (bare, node):
        assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr

    # Given them, the installed sandbox runs (its policy and kwok's stages are package data), a
    # color ships into it with the installed `rainbowd sandbox deploy`, and Ctrl-C stops it all.
    env[BIN_DIR_ENV] = str(default_binaries_dir())
    data_dir = tmp_path / "data"
    sandbox = launch_sandbox(
        [rainbowd, "sandbox", f"--data-dir={data_dir}", "--replicas=1"], tmp_path, cwd="/", env=env
    )
    try:
        sandbox.wait_for(r"^rainbowd sandbox is running$", within=START_DEADLINE)
        sandbox.wait_for(
            r"^pod rainbow-deploys-\w{6}-\S+ \(#\w{6}\) serving", within=START_DEADLINE
        )
        kubeconfig = sandbox.wait_for(r"^  export KUBECONFIG=(\S+)$", within=5).group(1)
        # What it prints to try next names the kubectl plugin's commands.
        for command in ("history", "rollback"):
            plugin = f"^    kubectl rainbow -n default {command} --app rainbow-deploys$"
            sandbox.wait_for(plugin, within=5)
        deploy = _run(
            [rainbowd, "sandbox", "deploy", "0ff1ce", f"--kubeconfig={kubeconfig}", "--replicas=1"],
            cwd="/",
            env=env,
            timeout=START_DEADLINE,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "Service rainbow-deploys now selects #0ff1ce" in deploy.stdout, deploy.stdout
        sandbox.process.send_signal(signal.SIGINT)
        assert wait_exit(sandbox, STOP_DEADLINE) == 0, sandbox.output()
    finally:
        if sandbox.process.poll() is None:
            sandbox.process.kill()
            sandbox.process.wait(30)
        if sandbox.process.returncode != 0:
            print(f"sandbox stdout:\n{sandbox.output()}\nsandbox stderr:\n{sandbox.logs()}")
    assert "sandbox stopped" in sandbox.output()
    assert sandbox_processes(data_dir) == {}


def _kubectl() -> Path:
    bin_dir = subprocess.run(
        [str(ROOT / "tests" / "cluster" / "build"), "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    kubectl = Path(bin_dir) / "kubectl"
    if not os.access(kubectl, os.X_OK):
        pytest.fail(f"no kubectl at {kubectl}: run tests/cluster/build", pytrace=False)
    return kubectl


@pytest.mark.cluster_full
def test_the_real_kubectl_finds_the_plugin_and_runs_it(
    runtime_venv: Path, cluster_full: ControlPlane, namespace: str
) -> None:
    kubectl = _kubectl()
    env = {
        "PATH": f"{runtime_venv}{os.pathsep}{kubectl.parent}{os.pathsep}/usr/bin:/bin",
        "KUBECONFIG": str(cluster_full.kubeconfig),
        "HOME": os.environ.get("HOME", "/root"),
    }
    listed = _run([str(kubectl), "plugin", "list"], env=env)
    assert str(runtime_venv / "kubectl-rainbow") in listed.stdout, listed.stdout + listed.stderr
    for command in PLUGIN_COMMANDS:
        shown = _run([str(kubectl), "rainbow", command, "--help"], env=env)
        assert shown.returncode == 0, f"kubectl rainbow {command} --help: {shown.stderr}"
        assert shown.stdout.startswith(f"usage: kubectl rainbow {command}"), shown.stdout
    # The current context and -n, as kubectl users type them.
    history = _run([str(kubectl), "rainbow", "-n", namespace, "history", "--app", "chat"], env=env)
    assert history.returncode == 0, history.stderr
    assert history.stdout.split()[:3] == ["COLOR", "STATE", "REPLICAS"], history.stdout
    missing = _run([str(kubectl), "rainbow", "-n", namespace, "rollback", "--app", "chat"], env=env)
    assert missing.returncode == 1
    assert f"no Service {namespace}/chat" in missing.stderr, missing.stderr
    # From kubectl, status asks the rainbowd running in the cluster (port-forward to its Service
    # in -n, rainbowd by default), with kubectl's current context.
    status = _run([str(kubectl), "rainbow", "-n", namespace, "status"], env=env)
    assert status.returncode == 1, status
    assert f"cannot forward to service/rainbowd in namespace {namespace}" in status.stderr
    assert 'services "rainbowd" not found' in status.stderr, status.stderr
    # kubectl asks kubectl_complete-rainbow for completions.
    completed = _run([str(kubectl), "__complete", "rainbow", "ro"], env=env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0] == "rollback", completed.stdout
