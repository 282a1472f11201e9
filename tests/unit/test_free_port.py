"""free_port: ports below the kernel's ephemeral range (where a connection made between choosing a
port and listening on it could take it), each given to one caller on the machine at a time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rainbowd_sandbox import procs
from rainbowd_sandbox.procs import ephemeral_ports, free_port

MANY = 100


def test_ports_are_below_the_ephemeral_range_distinct_and_free() -> None:
    below = min(ephemeral_ports()[0], 30_000)  # nor among Kubernetes' NodePorts
    ports = [free_port() for _ in range(MANY)]
    assert len(set(ports)) == MANY
    assert all(p < below for p in ports), [p for p in ports if p >= below]
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_two_processes_never_get_the_same_port() -> None:
    code = (
        "from rainbowd_sandbox.procs import free_port\n"
        f"print(' '.join(str(free_port()) for _ in range({MANY})))\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    mine = {free_port() for _ in range(MANY)}
    out, _ = other.communicate(timeout=120)
    theirs = {int(p) for p in out.split()}
    assert len(theirs) == MANY and len(mine) == MANY
    assert not mine & theirs


def test_a_claim_lapses_after_its_time_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A range of 1,000 ports, every one claimed just now but one, claimed long ago.
    monkeypatch.setattr(procs, "PORTS_DIR", tmp_path)
    monkeypatch.setattr(procs, "_BELOW_EPHEMERAL", 1_000)
    monkeypatch.setattr(procs, "_TRIES", 20_000)
    start = 20_000
    monkeypatch.setattr(procs, "ephemeral_ports", lambda: (start, 60999))
    now = time.time()
    for port in range(start - 1_000, start):
        (tmp_path / str(port)).write_text(f"{now:.3f}")
    stale = next(p for p in range(start - 1_000, start) if procs._bindable(p))
    (tmp_path / str(stale)).write_text(f"{now - procs.RESERVED_FOR - 1:.3f}")
    assert free_port() == stale
    assert float((tmp_path / str(stale)).read_text()) >= now
    # Now every port of the range is claimed: the kernel chooses one, in its own range.
    assert free_port() >= start
