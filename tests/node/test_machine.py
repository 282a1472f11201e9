"""What keeps the node safe for the machine it runs on: the nftables guard keeping 198.18.0.0/15
and forwarded traffic off the uplink (proven in network namespaces of the test's own, with the
node's very ruleset), one node per machine, the snapshot check, and image archives rebuilt only
when an input changes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rainbowd_sandbox.controlplane import BIN_DIR_ENV
from rainbowd_sandbox.images import Images, build_images, image_key
from rainbowd_sandbox.node import (
    BRIDGE,
    BRIDGE_IP,
    GUARD_TABLE,
    GUARDED_RANGE,
    NODE_BINARIES,
    MachineState,
    Node,
    NodeError,
    guard_ruleset,
    machine_lock,
    missing_parts,
    uplinks,
)
from rainbowd_sandbox.procs import wait_until

_CLONE_NEWNET = 0x40000000
_WITHIN = 60.0
"""Seconds for a namespace to appear or a packet to be counted, on two busy shared cores."""


class Netns:
    """A network namespace of the test's own, held by a sleeping process and gone with it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        ours = os.readlink("/proc/self/ns/net")
        self.path = f"/proc/{self.proc.pid}/ns/net"
        # Popen returns once unshare runs; the namespace exists once the process is in it.
        wait_until(
            lambda: True if os.readlink(self.path) != ours else None,
            timeout=_WITHIN,
            what="a network namespace of its own",
        )

    @property
    def pid(self) -> str:
        return str(self.proc.pid)

    def run(self, *argv: str, input_text: str | None = None) -> str:
        done = subprocess.run(
            ["nsenter", f"--net={self.path}", *argv],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        return done.stdout

    def udp_socket(self, address: str, port: int = 0) -> socket.socket:
        """A UDP socket living in this namespace (it keeps it, whichever thread uses it)."""
        made: list[socket.socket | BaseException] = []

        def make() -> None:
            # setns changes only this short-lived thread's namespace.
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((address, port))
                made.append(sock)
            except BaseException as exc:
                made.append(exc)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(count):
            made.append(Netns())
        yield made
    finally:
        for ns in made:
            ns.close()


def received(sock: socket.socket) -> set[bytes]:
    """Every datagram already queued on `sock`."""
    found = set()
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            found.add(sock.recv(100))
    return found


def guard_drops(machine: Netns) -> int:
    """Packets the guard's rules have dropped so far in `machine`."""
    listing = json.loads(machine.run("nft", "-j", "list", "table", "inet", GUARD_TABLE))
    return sum(
        expr["counter"]["packets"]
        for item in listing["nftables"]
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


def test_the_guard_keeps_the_range_and_forwarded_traffic_off_the_uplink() -> None:
    """A machine namespace with an uplink to an upstream namespace and the node's bridge with one
    pod on it: before the guard, the machine's packets to a 198.18.0.0/15 address behind the
    uplink and the pod's packets forwarded to the uplink both arrive upstream; with the node's
    ruleset loaded, the guard drops (and counts) both, while the machine still reaches upstream
    and the pod still reaches the bridge address."""
    with namespaces(3) as (machine, upstream, pod):
        # The uplink: a veth pair to "upstream", which also holds an address of the guarded
        # range, routed to by the machine's default route (the node routes only its own ranges).
        machine.run(
            "ip", "link", "add", "up0", "type", "veth", "peer", "up1", "netns", upstream.pid
        )
        machine.run("ip", "addr", "add", "198.51.100.1/24", "dev", "up0")
        machine.run("ip", "link", "set", "up0", "up")
        machine.run("ip", "link", "set", "lo", "up")
        machine.run("ip", "route", "add", "default", "via", "198.51.100.2")
        upstream.run("ip", "addr", "add", "198.51.100.2/24", "dev", "up1")
        upstream.run("ip", "addr", "add", "198.19.77.77/32", "dev", "up1")
        upstream.run("ip", "link", "set", "up1", "up")
        upstream.run("ip", "route", "add", "198.18.0.0/16", "via", "198.51.100.1")
        # The node's bridge, with a pod on it.
        machine.run("ip", "link", "add", BRIDGE, "type", "bridge")
        machine.run("ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", BRIDGE)
        machine.run("ip", "link", "set", BRIDGE, "up")
        machine.run("ip", "link", "add", "pod0", "type", "veth", "peer", "eth0", "netns", pod.pid)
        machine.run("ip", "link", "set", "pod0", "master", BRIDGE, "up")
        pod.run("ip", "addr", "add", "198.18.0.2/16", "dev", "eth0")
        pod.run("ip", "link", "set", "eth0", "up")
        pod.run("ip", "route", "add", "default", "via", BRIDGE_IP)
        machine.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

        inbox = upstream.udp_socket("0.0.0.0")
        port = inbox.getsockname()[1]
        host_inbox = machine.udp_socket(BRIDGE_IP)
        from_machine = machine.udp_socket("0.0.0.0")
        from_pod = pod.udp_socket("0.0.0.0")
        inbox.settimeout(_WITHIN)
        host_inbox.settimeout(_WITHIN)

        def arrives(sender: socket.socket, to: str, inbox: socket.socket, what: bytes) -> None:
            sender.sendto(what, (to, inbox.getsockname()[1]))
            inbox.setblocking(True)
            inbox.settimeout(_WITHIN)
            assert inbox.recv(100) == what

        # Without the guard the paths are open: this is what it has to stop.
        arrives(from_machine, "198.19.77.77", inbox, b"range, unguarded")
        arrives(from_pod, "198.51.100.2", inbox, b"forwarded, unguarded")

        machine.run("nft", "-f", "-", input_text=guard_ruleset(["up0"]))
        assert guard_drops(machine) == 0

        # A packet the machine sends is refused at once (EPERM) when netfilter drops it.
        with contextlib.suppress(PermissionError):
            from_machine.sendto(b"range, guarded", ("198.19.77.77", port))
        wait_until(
            lambda: True if guard_drops(machine) == 1 else None,
            timeout=_WITHIN,
            what="the guard dropping the machine's packet to 198.19.77.77",
        )
        from_pod.sendto(b"forwarded, guarded", ("198.51.100.2", port))
        wait_until(
            lambda: True if guard_drops(machine) == 2 else None,
            timeout=_WITHIN,
            what="the guard dropping the pod's packet forwarded to the uplink",
        )
        assert received(inbox) == set()

        # What the node needs still flows: the machine's own traffic up the uplink, and pods
        # to the bridge address (where the apiserver listens).
        arrives(from_machine, "198.51.100.2", inbox, b"machine to upstream")
        arrives(from_pod, BRIDGE_IP, host_inbox, b"pod to the bridge")
        assert guard_drops(machine) == 2
        for sock in (inbox, host_inbox, from_machine, from_pod):
            sock.close()


def test_the_running_node_guards_this_machines_uplinks(node: Node) -> None:
    listing = json.loads(
        subprocess.check_output(["nft", "-j", "list", "table", "inet", GUARD_TABLE])
    )
    rules = json.dumps([item["rule"] for item in listing["nftables"] if "rule" in item])
    for uplink in uplinks():
        assert json.dumps(uplink) in rules
    assert json.dumps(GUARDED_RANGE.split("/")[0]) in rules


def test_a_second_node_on_the_machine_waits_for_the_first(node: Node) -> None:
    # The session's node holds the machine-wide lock; another run waits (here for a second).
    with pytest.raises(NodeError, match="still held after 1s"), machine_lock(timeout=1.0):
        pass


def test_the_snapshot_check_names_each_change() -> None:
    before = MachineState(
        sysctls={"kernel/panic": "0"},
        nft={"ip filter": ["INPUT"]},
        links=["eth0", "lo"],
        routes=[],
        mounts=["/"],
        cgroups={"/sys/fs/cgroup/cpu": ["user.slice"]},
        paths={"/var/lib/kubelet": None},
    )
    after = MachineState(
        sysctls={"kernel/panic": "10"},
        nft={"ip filter": ["INPUT", "KUBE-FIREWALL"], "inet rainbowd-guard": ["forward"]},
        links=["eth0", "lo", BRIDGE],
        routes=[],
        mounts=["/", "/var/lib/kubelet/pods/x"],
        cgroups={"/sys/fs/cgroup/cpu": ["user.slice", "rainbowd-node"]},
        paths={"/var/lib/kubelet": ["pods"]},
    )
    assert before.differences(before) == []
    assert before.differences(after) == [
        "sysctl kernel/panic is 10, was 0",
        "nftables table inet rainbowd-guard: chains ['forward'], were None",
        "nftables table ip filter: chains ['INPUT', 'KUBE-FIREWALL'], were ['INPUT']",
        f"network link {BRIDGE} added",
        "mount added: /var/lib/kubelet/pods/x",
        "cgroup /sys/fs/cgroup/cpu/rainbowd-node added",
        "/var/lib/kubelet: holds ['pods'], held None",
    ]


def test_the_node_check_and_sandbox_node_say_what_is_missing(tmp_path: Path) -> None:
    """`make run` picks the real node when `--check` says ok; elsewhere both name what lacks."""

    def run(*args: str, binaries: Path | None = None) -> tuple[int, str]:
        env = dict(os.environ)
        if binaries is not None:
            env[BIN_DIR_ENV] = str(binaries)
        done = subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    assert run("rainbowd_sandbox.node", "--check") == (0, "ok\n")
    assert missing_parts(tmp_path) == list(NODE_BINARIES)
    missing = f"a real node cannot run here, missing: {', '.join(NODE_BINARIES)}"
    assert run("rainbowd_sandbox.node", "--check", binaries=tmp_path) == (1, missing + "\n")
    code, out = run("rainbowd", "sandbox", "--node", "--exit-after-story", binaries=tmp_path)
    assert code == 1
    assert f"error: {missing}" in out.splitlines(), out


def test_a_warm_image_build_rebuilds_nothing(node_images: Images) -> None:
    again = build_images()
    assert again.timings and all(seconds == 0.0 for seconds in again.timings.values())
    assert [i.archive for i in again.all()] == [i.archive for i in node_images.all()]


def test_the_image_key_follows_every_input_and_nothing_else(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy2(root / name, tmp_path / name)
    for name in ("rainbowd", "demo_app"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    key = image_key(tmp_path, "base")
    assert image_key(tmp_path, "base") == key
    assert image_key(tmp_path, "another base") != key
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("not an input\n")
    # Nor is the sandbox: the image carries the runtime only.
    (tmp_path / "sandbox" / "rainbowd_sandbox").mkdir(parents=True)
    (tmp_path / "sandbox" / "rainbowd_sandbox" / "node.py").write_text("not an input\n")
    (tmp_path / "rainbowd" / "__pycache__").mkdir()
    (tmp_path / "rainbowd" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert image_key(tmp_path, "base") == key
    changes = {
        "Dockerfile": "\n# changed\n",
        "demo_app/__init__.py": "\n# changed\n",
        "rainbowd/web/static/page.css": "\n/* changed */\n",
    }
    seen = {key}
    for name, text in changes.items():
        with (tmp_path / name).open("a") as handle:
            handle.write(text)
        seen.add(image_key(tmp_path, "base"))
    (tmp_path / "rainbowd" / "new_module.py").write_text("")
    seen.add(image_key(tmp_path, "base"))
    assert len(seen) == len(changes) + 2
