"""Reaching the in-cluster rainbowd from a workstation: `kubectl port-forward` to its Service on
127.0.0.1, for `rainbowd dashboard` and `rainbowd status --in-cluster` (`kubectl rainbow ...`).
Only loopback is listened on; the page and /status are read-only.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

# Where k8s/base installs rainbowd, and the name of its HTTP port there.
NAMESPACE = "rainbowd"
SERVICE = "rainbowd"
SERVICE_PORT = "http"
# kubectl waits up to a minute for a running pod behind the Service (--pod-running-timeout).
START_TIMEOUT = 75.0
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


class ForwardError(Exception):
    """kubectl is missing or could not forward; the message says where and why. `usage` is
    true when the command line is at fault (a bad port, no kubectl), not the cluster."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def add_arguments(parser: argparse.ArgumentParser, *, port: bool = False) -> None:
    """--kubeconfig, --context, -n (where rainbowd runs), --service, --kubectl [and --port]."""
    group = parser.add_argument_group(
        "the in-cluster rainbowd (as kubectl: the current context by default)"
    )
    group.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (else $KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (else its current context)")
    group.add_argument(
        "--namespace", "-n", default=NAMESPACE, help=f"where rainbowd runs ({NAMESPACE})"
    )
    group.add_argument("--service", default=SERVICE, help=f"rainbowd's Service ({SERVICE})")
    group.add_argument(
        "--kubectl",
        default=os.environ.get("KUBECTL", "kubectl"),
        help="the kubectl to run (kubectl on PATH) [KUBECTL]",
    )
    if port:
        group.add_argument(
            "--port", type=int, default=0, help="local port on 127.0.0.1 (default: a free one)"
        )


def port_forward_command(args: argparse.Namespace, kubectl: str) -> list[str]:
    argv = [
        kubectl,
        "port-forward",
        f"service/{args.service}",
        f"{getattr(args, 'port', 0) or ''}:{SERVICE_PORT}",
        "--address=127.0.0.1",
        f"--namespace={args.namespace}",
    ]
    if args.kubeconfig:
        argv.append(f"--kubeconfig={args.kubeconfig}")
    if args.context:
        argv.append(f"--context={args.context}")
    return argv


@dataclass
class Forward:
    """A running `kubectl port-forward`: the local port, and the process to wait on."""

    port: int
    process: subprocess.Popen[str]
    errors: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stopped(self) -> str:
        """Waits until kubectl exits (the forward broke, or Ctrl-C); what it said on stderr."""
        self.process.wait()
        return "".join(self.errors).strip()


@contextmanager
def forwarded(args: argparse.Namespace) -> Iterator[Forward]:
    """kubectl port-forward to the rainbowd Service for the block; stopped when it ends."""
    port = getattr(args, "port", 0)
    if not 0 <= port <= 65535:
        raise ForwardError(f"--port must be 0..65535, got {port}", usage=True)
    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        raise ForwardError(
            f"{args.kubectl!r} not found: install kubectl or pass --kubectl", usage=True
        )
    process = subprocess.Popen(
        port_forward_command(args, kubectl),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    stderr_read = _read_lines(process.stderr, errors.append, name="kubectl port-forward stderr")
    try:
        found = _forwarded_port(process)
        if found is None:
            _stop(process)
            stderr_read.join(timeout=10)
            where = f"service/{args.service} in namespace {args.namespace}"
            detail = "".join(errors).strip() or "no output"
            raise ForwardError(f"cannot forward to {where}: {detail}")
        yield Forward(found, process, errors)
    finally:
        _stop(process)


def _forwarded_port(process: subprocess.Popen[str]) -> int | None:
    """The local port kubectl reports it listens on; None when it exits or times out first.
    Its stdout is read on to the end in a thread, so kubectl's "Handling connection" lines
    never fill the pipe."""
    ports: queue.Queue[int | None] = queue.Queue()

    def line(text: str | None) -> None:
        found = None if text is None else _FORWARDING.search(text)
        if text is None or found is not None:
            ports.put(None if found is None else int(found.group(1)))

    _read_lines(process.stdout, line, name="kubectl port-forward stdout", end=True)
    try:
        return ports.get(timeout=START_TIMEOUT)
    except queue.Empty:
        return None


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_lines(
    stream: IO[str] | None, each: Callable[[Any], None], *, name: str, end: bool = False
) -> threading.Thread:
    """A thread reading `stream` to its end, handing each line to `each` (then None if `end`)."""

    def read() -> None:
        if stream is not None:
            for text in stream:
                each(text)
        if end:
            each(None)

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    return thread
