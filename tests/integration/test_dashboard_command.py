"""`rainbowd dashboard` (`kubectl rainbow dashboard`) runs the real kubectl's port-forward against
the real apiserver, and a missing Service is a clear error naming where it looked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rainbowd.forwarding import port_forward_command
from rainbowd_sandbox.controlplane import ControlPlane
from tests.installtools import kubectl

pytestmark = pytest.mark.cluster


def dashboard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rainbowd", "dashboard", "--no-browser", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_missing_service_is_named_in_the_error(cluster: ControlPlane, namespace: str) -> None:
    result = dashboard(
        f"--kubeconfig={cluster.kubeconfig}", f"--namespace={namespace}", f"--kubectl={kubectl()}"
    )
    assert result.returncode == 1, result
    assert f"cannot forward to service/rainbowd in namespace {namespace}" in result.stderr
    assert 'services "rainbowd" not found' in result.stderr, result.stderr
    assert result.stdout == ""


def test_no_kubectl_is_a_usage_error() -> None:
    result = dashboard("--kubectl=/nonexistent/kubectl")
    assert result.returncode == 2
    assert "'/nonexistent/kubectl' not found" in result.stderr


def test_the_port_forward_targets_the_service_http_port_on_loopback_only() -> None:
    from rainbowd.cli import build_parser

    args = build_parser().parse_args(
        ["dashboard", "--context=prod", "--kubeconfig=k", "-n", "ops", "--port=8081"]
    )
    assert port_forward_command(args, "/bin/kubectl") == [
        "/bin/kubectl",
        "port-forward",
        "service/rainbowd",
        "8081:http",
        "--address=127.0.0.1",
        "--namespace=ops",
        "--kubeconfig=k",
        "--context=prod",
    ]
