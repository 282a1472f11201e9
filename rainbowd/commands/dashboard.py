"""`rainbowd dashboard`, also `kubectl rainbow dashboard`: forwards a local port to the in-cluster
rainbowd Service with `kubectl port-forward` and opens its live page in a browser, until Ctrl-C.
The page is read-only, so nothing here can change the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import webbrowser
from typing import Any

from rainbowd.commands.cluster_args import FAILURE_EXIT, USAGE_EXIT

# Where k8s/base installs rainbowd, and the name of its HTTP port there.
NAMESPACE = "rainbowd"
SERVICE = "rainbowd"
SERVICE_PORT = "http"
# kubectl waits up to a minute for a running pod behind the Service (--pod-running-timeout).
START_TIMEOUT = 75.0
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="open the in-cluster rainbowd's live page (through kubectl port-forward)",
        description=(
            "Forward a local port on 127.0.0.1 to the rainbowd Service with `kubectl "
            "port-forward`, print the page's address and open it in a browser; Ctrl-C stops."
        ),
    )
    group = parser.add_argument_group("cluster (as kubectl: the current context by default)")
    group.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (else $KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (else its current context)")
    group.add_argument(
        "--namespace", "-n", default=NAMESPACE, help=f"where rainbowd runs ({NAMESPACE})"
    )
    parser.add_argument("--service", default=SERVICE, help=f"rainbowd's Service ({SERVICE})")
    parser.add_argument(
        "--port", type=int, default=0, help="local port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the address only, open no browser"
    )
    parser.add_argument(
        "--kubectl",
        default=os.environ.get("KUBECTL", "kubectl"),
        help="the kubectl to run (kubectl on PATH) [KUBECTL]",
    )
    parser.set_defaults(func=run)


def port_forward_command(args: argparse.Namespace, kubectl: str) -> list[str]:
    argv = [
        kubectl,
        "port-forward",
        f"service/{args.service}",
        f"{args.port or ''}:{SERVICE_PORT}",
        "--address=127.0.0.1",
        f"--namespace={args.namespace}",
    ]
    if args.kubeconfig:
        argv.append(f"--kubeconfig={args.kubeconfig}")
    if args.context:
        argv.append(f"--context={args.context}")
    return argv


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"rainbowd dashboard: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return USAGE_EXIT
    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        print(
            f"rainbowd dashboard: {args.kubectl!r} not found: install kubectl or pass --kubectl",
            file=sys.stderr,
        )
        return USAGE_EXIT
    try:
        return asyncio.run(_forward(args, port_forward_command(args, kubectl)))
    except KeyboardInterrupt:
        return 0


async def _forward(args: argparse.Namespace, argv: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    try:
        try:
            port = await asyncio.wait_for(_forwarded_port(proc.stdout), START_TIMEOUT)
        except TimeoutError:
            port = None
        if port is None:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
            detail = (await errors).decode(errors="replace").strip() or "no output"
            where = f"service/{args.service} in namespace {args.namespace}"
            print(f"rainbowd dashboard: cannot forward to {where}: {detail}", file=sys.stderr)
            return FAILURE_EXIT
        url = f"http://127.0.0.1:{port}/"
        print(f"rainbowd's live page: {url}  (kubectl port-forward; Ctrl-C stops)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        # Keep reading kubectl's "Handling connection" lines so its pipe never fills.
        await asyncio.gather(proc.stdout.read(), proc.wait())
        detail = (await errors).decode(errors="replace").strip()
        print(f"rainbowd dashboard: kubectl port-forward stopped: {detail}", file=sys.stderr)
        return FAILURE_EXIT
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        errors.cancel()


async def _forwarded_port(stdout: asyncio.StreamReader) -> int | None:
    """The local port kubectl reports it listens on; None when it exits first."""
    while line := await stdout.readline():
        found = _FORWARDING.search(line.decode(errors="replace"))
        if found is not None:
            return int(found.group(1))
    return None
