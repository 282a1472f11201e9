"""Command line of the demo color app: flags with environment defaults, signals, clean shutdown.

Every flag falls back to an environment variable so a pod spec can set them with `env:` and the
downward API (POD_NAMESPACE, COLOR from a label...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from demo_app.serving import ColorServer, Config, log

_HEX6 = re.compile(r"[0-9a-fA-F]{6}")
# Shutdown must end even if a client never reads: the pod's grace period is the real bound,
# this keeps well inside the default 30 s.
_STOP_DEADLINE = 10.0


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _color(text: str) -> str:
    color = text.removeprefix("#")
    if not _HEX6.fullmatch(color):
        raise argparse.ArgumentTypeError(f"expected six hex digits like 3c3fdc, got {text!r}")
    return color.lower()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535 (0: any free), got {port}")
    return port


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo_app",
        description="A rainbow-deploy demo app: an HTTP page in its color, a TCP stream "
        "printing it, and a Prometheus gauge of the connections it holds.",
    )
    p.add_argument("--app", default=_env("APP", "rainbow-deploys"), help="app name [$APP]")
    p.add_argument(
        "--color",
        type=_color,
        default=_env("COLOR"),
        required=_env("COLOR") is None,
        help="six hex digits, the release's color [$COLOR]",
    )
    p.add_argument("--namespace", default=_env("POD_NAMESPACE", "default"), help="[$POD_NAMESPACE]")
    p.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="listen address [$HOST]")
    p.add_argument(
        "--http-port",
        type=_port,
        default=_env("HTTP_PORT", "8080"),
        help="page, /healthz, /metrics, /ws; 0 picks a free port [$HTTP_PORT]",
    )
    p.add_argument(
        "--tcp-port",
        type=_port,
        default=_env("TCP_PORT", "8081"),
        help="the color stream; 0 picks a free port [$TCP_PORT]",
    )
    p.add_argument(
        "--interval",
        type=_interval,
        default=_env("INTERVAL", "5"),
        help="seconds between color lines on a stream [$INTERVAL]",
    )
    p.add_argument(
        "--annotations-file",
        type=Path,
        default=_env("PODINFO_ANNOTATIONS", "/etc/podinfo/annotations"),
        help="the pod's annotations from the downward API [$PODINFO_ANNOTATIONS]",
    )
    return p


async def serve(config: Config) -> None:
    server = ColorServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log("demo app stopping", color=config.color)
    try:
        await asyncio.wait_for(server.stop(), timeout=_STOP_DEADLINE)
    except TimeoutError:
        log("demo app stop deadline passed", deadline_seconds=_STOP_DEADLINE)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = Config(
        app=args.app,
        color=args.color,
        namespace=args.namespace,
        host=args.host,
        http_port=args.http_port,
        tcp_port=args.tcp_port,
        interval=args.interval,
        annotations_file=args.annotations_file,
    )
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log("demo app cannot listen", cause=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
