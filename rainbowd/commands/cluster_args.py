"""What the workflow commands (deploy, rollback, promote, hold, history) share: where the
cluster is (kubeconfig, context, namespace, as kubectl reads them), and running one of them
with its errors turned into a message and an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rainbowd.core.durations import parse_duration

USAGE_EXIT = 2
FAILURE_EXIT = 1


def duration_seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cluster_arguments(parser: argparse.ArgumentParser, *, app: bool = True) -> None:
    group = parser.add_argument_group("cluster (as kubectl: the current context by default)")
    group.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (else $KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (else its current context)")
    group.add_argument(
        "--namespace",
        "-n",
        help="namespace (else the context's namespace, else default)",
    )
    if app:
        parser.add_argument("--app", required=True, help="the app: its pod template's app label")
        parser.add_argument(
            "--service",
            help="the Service that selects the live color (default: the template's, else APP)",
        )


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig's context, as kubectl would use it; else `default`."""
    import yaml

    env = os.environ.get("KUBECONFIG", "")
    paths = [kubeconfig] if kubeconfig else [p for p in env.split(os.pathsep) if p]
    if not paths:
        paths = ["~/.kube/config"]
    documents = []
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).expanduser().read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):
            documents.append(loaded)
    current = context or next(
        (str(d["current-context"]) for d in documents if d.get("current-context")), None
    )
    for document in documents:
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") == current:
                namespace = (entry.get("context") or {}).get("namespace")
                if namespace:
                    return str(namespace)
    return "default"


def namespace_of(args: argparse.Namespace) -> str:
    return str(args.namespace or context_namespace(args.kubeconfig, args.context))


def say(text: str) -> None:
    print(text, flush=True)


def run_with_api(
    command: str,
    kubeconfig: str | None,
    context: str | None,
    body: Callable[[Any], Awaitable[int]],
) -> int:
    """Runs `body(api)` with a client for the chosen kubeconfig and context; a DeployError or
    an API error is printed on stderr as `rainbowd COMMAND: ...` with its exit code."""
    from rainbowd.deploy import DeployError, UsageError
    from rainbowd.kube.clients import ConfigError, KubeError, make_api_client

    async def main() -> int:
        try:
            api = await make_api_client(kubeconfig=kubeconfig, context=context)
        except ConfigError as exc:
            print(f"rainbowd {command}: {exc}", file=sys.stderr)
            return USAGE_EXIT
        try:
            return await body(api)
        finally:
            await api.close()

    try:
        return asyncio.run(main())
    except UsageError as exc:
        print(f"rainbowd {command}: {exc}", file=sys.stderr)
        return USAGE_EXIT
    except DeployError as exc:
        print(f"rainbowd {command}: failed: {exc}", file=sys.stderr)
        return FAILURE_EXIT
    except KubeError as exc:
        print(f"rainbowd {command}: failed: the API answered: {exc}", file=sys.stderr)
        return FAILURE_EXIT
