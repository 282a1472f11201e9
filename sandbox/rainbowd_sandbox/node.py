"""A real Kubernetes node on this machine: containerd (runc), kubelet and kube-proxy (nftables
mode) on a CNI bridge, against a control plane that listens on the bridge, so pods run for real,
reach the apiserver through the `kubernetes` Service and are reached through real ClusterIPs.

It needs root on Linux and changes the machine while it runs (a bridge, routes, nftables tables,
cgroups, a few sysctls, files kubelet insists on under /var). `Node.stop()` undoes all of it on
every exit path and checks the machine against a snapshot taken before the start. One node per
machine: a machine-wide lock makes a second one wait. `python -m rainbowd_sandbox.node` runs one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rainbowd.logs import get_logger, setup_logging
from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import (
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    ControlPlaneError,
    default_binaries_dir,
)
from rainbowd_sandbox.images import Images, build_images
from rainbowd_sandbox.procs import Process, ProcessError, free_port, wait_until

log = get_logger(__name__)

NODE_NAME = "rainbowd-node"
BRIDGE = "rainbowd0"
BRIDGE_IP = "198.18.0.1"
POD_SUBNET = "198.18.0.0/16"
GUARDED_RANGE = "198.18.0.0/15"
"""Pods and Services: the benchmarking range, kept on the bridge by an nftables guard."""
GUARD_TABLE = "rainbowd-guard"
CGROUP_ROOT = "rainbowd-node"
"""kubelet's cgroup root: every pod's cgroup lives under /rainbowd-node in each hierarchy."""
LOCK_PATH = Path("/tmp/rainbowd-node.lock")
PRIVATE_PREFIX = "/tmp/rainbowd-node-"
"""Every node's private folder starts so: its processes and mounts are found by this prefix."""
NODE_BINARIES = ("kubelet", "kube-proxy", "pause", "kubectl", "prometheus")
"""From tests/cluster/build; prometheus is built there because Debian's has no Kubernetes SD."""
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "ip", "unshare")
CNI_BIN_DIR = Path("/usr/lib/cni")

# kubelet sets these with no way to opt out (kernel.panic=10 would reboot the machine on an oops),
# the CNI bridge turns on forwarding: saved before, restored once the node is Ready and at stop.
_RESTORED_SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "net/ipv4/ip_forward",
)
# Checked against the snapshot: everything kubelet, kube-proxy, containerd or CNI may set.
_CHECKED_SYSCTLS = (
    *_RESTORED_SYSCTLS,
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
# Paths kubelet, containerd and CNI use whatever they are told; removed if they were not there.
_GLOBAL_PATHS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
    "/var/lib/containers",
    "/run/containers",
    "/etc/kubernetes",
)

_START_TIMEOUT = 120.0
_READY_TIMEOUT = 180.0
_STOP_TIMEOUT = 20.0
_PODS_GONE_TIMEOUT = 60.0
_MNT_DETACH = 2


class NodeError(RuntimeError):
    """The node cannot start, or stopping it left the machine changed; the message says how."""


def missing_parts(binaries: Path | None = None) -> list[str]:
    """What a node needs and this machine lacks: root, Linux, tools from setup, binaries."""
    missing: list[str] = []
    if not Path("/proc/self/mountinfo").exists():
        missing.append("Linux")
    if os.geteuid() != 0:
        missing.append("root")
    missing += [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"CNI plugins in {CNI_BIN_DIR}")
    binaries = binaries if binaries is not None else default_binaries_dir()
    missing += [b for b in NODE_BINARIES if not os.access(binaries / b, os.X_OK)]
    return missing


def _run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


# -- the machine: a lock, a snapshot, and the sweep that restores it --------------------------


@contextlib.contextmanager
def machine_lock(timeout: float = 3600.0) -> Iterator[None]:
    """One node per machine: kubelet's cgroups, device-plugin folder and the bridge are global."""

    def waiting(path: Path) -> None:
        log.warning("another node runs on this machine; waiting for it", lock=str(path))

    try:
        with buildcache.locked(LOCK_PATH, timeout=timeout, waiting=waiting):
            yield
    except buildcache.CacheError as exc:
        raise NodeError(str(exc)) from None


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value)


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(point)
    return points


def _cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, and the unified v2 tree)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(fields[4]))
    return found


def _nft_tables() -> dict[str, list[str]]:
    """`family name` of every nftables table, with the names of its chains."""
    if shutil.which("nft") is None:
        return {}
    data = json.loads(_run(["nft", "-j", "list", "ruleset"]) or '{"nftables": []}')
    tables: dict[str, list[str]] = {}
    for item in data.get("nftables", []):
        if "table" in item:
            tables.setdefault(f"{item['table']['family']} {item['table']['name']}", [])
        elif "chain" in item:
            chain = item["chain"]
            tables.setdefault(f"{chain['family']} {chain['table']}", []).append(chain["name"])
    return {name: sorted(chains) for name, chains in tables.items()}


def _links() -> list[str]:
    return sorted(link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"])))


def _routes() -> list[str]:
    routes = json.loads(_run(["ip", "-j", "route", "show", "table", "all"]))
    return sorted(json.dumps(r, sort_keys=True) for r in routes)


def _listing(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return []


@dataclass(frozen=True)
class MachineState:
    """What a node could change on this machine, as found at one moment."""

    sysctls: dict[str, str | None]
    nft: dict[str, list[str]]
    links: list[str]
    routes: list[str]
    mounts: list[str]
    cgroups: dict[str, list[str]]
    paths: dict[str, list[str] | None]

    @classmethod
    def take(cls) -> MachineState:
        return cls(
            sysctls={name: _read_sysctl(name) for name in _CHECKED_SYSCTLS},
            nft=_nft_tables(),
            links=_links(),
            routes=_routes(),
            mounts=sorted(_mountpoints()),
            cgroups={str(h): _listing(str(h)) or [] for h in _cgroup_hierarchies()},
            paths={path: _listing(path) for path in _GLOBAL_PATHS},
        )

    def differences(self, now: MachineState) -> list[str]:
        """Each way `now` differs from this snapshot, in words."""
        found: list[str] = []
        for name, was in self.sysctls.items():
            if now.sysctls.get(name) != was:
                found.append(f"sysctl {name} is {now.sysctls.get(name)}, was {was}")
        for table in sorted(set(self.nft) | set(now.nft)):
            if self.nft.get(table) != now.nft.get(table):
                found.append(
                    f"nftables table {table}: chains {now.nft.get(table)}, "
                    f"were {self.nft.get(table)}"
                )
        found += [f"network link {x} added" for x in sorted(set(now.links) - set(self.links))]
        found += [f"network link {x} removed" for x in sorted(set(self.links) - set(now.links))]
        found += [f"route added: {r}" for r in sorted(set(now.routes) - set(self.routes))]
        found += [f"route removed: {r}" for r in sorted(set(self.routes) - set(now.routes))]
        found += [f"mount added: {m}" for m in sorted(set(now.mounts) - set(self.mounts))]
        found += [f"mount removed: {m}" for m in sorted(set(self.mounts) - set(now.mounts))]
        for hierarchy, was_groups in self.cgroups.items():
            added = set(now.cgroups.get(hierarchy, [])) - set(was_groups)
            found += [f"cgroup {hierarchy}/{group} added" for group in sorted(added)]
        for path, was_entries in self.paths.items():
            if now.paths.get(path) != was_entries:
                found.append(f"{path}: holds {now.paths.get(path)}, held {was_entries}")
        return found


def _unmount_under(folders: Sequence[str], keep: Sequence[str] = ()) -> None:
    """Detaches every mount in one of `folders` or under PRIVATE_PREFIX, deepest first, except
    `keep`."""
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(set(_mountpoints()), key=len, reverse=True):
        ours = point.startswith(PRIVATE_PREFIX) or any(
            point == f or point.startswith(f + "/") for f in folders
        )
        if ours and point not in keep and libc.umount2(point.encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                log.warning("cannot unmount", path=point, error=os.strerror(err))


def _kill_cgroup_tree(root: Path) -> None:
    """SIGKILLs every process in the cgroup `root` and below, then removes the cgroups."""
    if not root.exists():
        return
    groups = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    groups.insert(0, root)
    deadline = time.monotonic() + 10
    for group in reversed(groups):
        while True:
            try:
                pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("cgroup still busy", cgroup=str(group))
                    break
                time.sleep(0.05)


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line mentions `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def sweep(state: MachineState | None, *, private_dir: Path | None) -> None:
    """Undoes what a node changes, whether it ran to the end or was killed half-way: kills its
    containers and shims, unmounts, removes its cgroups, bridge, routes, nftables tables and the
    files it left, and puts the sysctls back (to `state`'s values when known). Without `state`
    (before a start, under the machine lock) it clears what a killed node left."""
    # containerd's shims re-parent to init, out of every process group: found by their socket.
    for pid in _processes_with(PRIVATE_PREFIX):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for hierarchy in _cgroup_hierarchies():
        _kill_cgroup_tree(hierarchy / CGROUP_ROOT)
    keep = state.mounts if state is not None else ()
    _unmount_under([p for p in _GLOBAL_PATHS if state is not None and state.paths[p] is None], keep)
    for link in _links():
        if link.startswith("veth") and (state is None or link not in state.links):
            shown = _run(["ip", "-j", "link", "show", link], check=False).replace(" ", "")
            if f'"master":"{BRIDGE}"' in shown:
                _run(["ip", "link", "delete", link], check=False)
    if BRIDGE in _links():
        _run(["ip", "link", "delete", BRIDGE], check=False)
    _run(["ip", "route", "flush", "exact", SERVICE_CLUSTER_IP_RANGE], check=False)
    for table, chains in _nft_tables().items():
        family, name = table.split(" ", 1)
        if state is None:
            if name in (GUARD_TABLE, "kube-proxy"):
                _run(["nft", "delete", "table", family, name], check=False)
            continue
        if table not in state.nft:
            _run(["nft", "delete", "table", family, name], check=False)
            continue
        for chain in set(chains) - set(state.nft[table]):
            _run(["nft", "flush", "chain", family, name, chain], check=False)
            _run(["nft", "delete", "chain", family, name, chain], check=False)
    if state is None:
        # A killed node's container log links outlive their targets; kubelet removes dangling
        # ones itself once it runs, which would then read as a change against the snapshot.
        for dangling in Path("/var/log/containers").glob("*"):
            if dangling.is_symlink() and not dangling.exists():
                dangling.unlink(missing_ok=True)
    for path in _GLOBAL_PATHS:
        was = state.paths.get(path) if state is not None else None
        if state is not None and was is None:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                Path(path).unlink()
        elif was is not None:
            for entry in set(_listing(path) or []) - set(was):
                target = Path(path) / entry
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
    if state is not None:
        for name, value in state.sysctls.items():
            if value is not None and _read_sysctl(name) != value:
                _write_sysctl(name, value)
    stale = Path(PRIVATE_PREFIX).parent.glob(Path(PRIVATE_PREFIX).name + "*")
    for folder in [private_dir] if private_dir is not None else stale:
        shutil.rmtree(folder, ignore_errors=True)


# -- the guard --------------------------------------------------------------------------------


def uplinks() -> list[str]:
    """The interfaces this machine's default routes leave by."""
    routes = json.loads(_run(["ip", "-j", "route", "show", "default"]) or "[]")
    return sorted({route["dev"] for route in routes if route.get("dev")})


def guard_ruleset(uplink_names: Sequence[str]) -> str:
    """The nftables table keeping the node's traffic home: nothing of 198.18.0.0/15 leaves by an
    interface other than loopback and the bridge, nothing from the bridge is forwarded elsewhere,
    and nothing at all is forwarded to an uplink. Each rule counts what it drops (`nft list table
    inet rainbowd-guard` shows it)."""
    names = ", ".join(json.dumps(name) for name in uplink_names)
    forward_uplink = f"oifname {{ {names} }} counter drop" if uplink_names else ""
    return f"""table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    {forward_uplink}
    iifname "{BRIDGE}" oifname != "{BRIDGE}" counter drop
  }}
  chain postrouting {{
    type filter hook postrouting priority 110; policy accept;
    oifname != {{ "lo", "{BRIDGE}" }} ip daddr {GUARDED_RANGE} counter drop
    oifname != {{ "lo", "{BRIDGE}" }} ip saddr {GUARDED_RANGE} counter drop
  }}
}}
"""


# -- configuration files ----------------------------------------------------------------------


def _containerd_config(d: Path, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# Plugins that would write outside the private folder, or that nothing here uses.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[{cri}]
  sandbox_image = "{pause_image}"
  # This VM grants no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc") or "runc"}"
        Root = "{d}/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
    max_conf_num = 1
"""


def _cni_config(d: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "rainbowd",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(d / "ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                    # Pods get no default route: nothing but the pod and Service ranges.
                    "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE}],
                },
            }
        ],
    }


@dataclass
class _Ports:
    kubelet: int = field(default_factory=free_port)
    kubelet_healthz: int = field(default_factory=free_port)
    proxy_healthz: int = field(default_factory=free_port)
    proxy_metrics: int = field(default_factory=free_port)


# -- the node ---------------------------------------------------------------------------------


class Node:
    """A control plane on the bridge plus containerd, kubelet and kube-proxy: `start()`, then
    `stop()` in a `finally`. `controlplane` is the ControlPlane; `images` what containerd holds."""

    def __init__(
        self,
        *,
        binaries: Path | None = None,
        images: Images | None = None,
        keep_logs: Path | None = None,
    ) -> None:
        self.binaries = binaries if binaries is not None else default_binaries_dir()
        self.images = images
        self.keep_logs = keep_logs
        """Where the components' logs are copied at stop (the private folder is removed)."""
        self.data_dir: Path | None = None
        self.controlplane: ControlPlane | None = None
        self.timings: dict[str, float] = {}
        self._lock: contextlib.ExitStack | None = None
        self._state: MachineState | None = None
        self._procs: dict[str, Process] = {}
        self._ports = _Ports()
        self._saved_sysctls: dict[str, str | None] = {}

    # -- addresses --------------------------------------------------------------------------

    @property
    def private_dir(self) -> Path:
        if self.data_dir is None:
            raise NodeError("node not started")
        return self.data_dir

    @property
    def kubeconfig(self) -> Path:
        if self.controlplane is None:
            raise NodeError("node not started")
        return self.controlplane.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.private_dir / "containerd.sock"

    def log_path(self, component: str) -> Path:
        return self.private_dir / "logs" / f"{component}.log"

    def ctr(self, *args: str) -> str:
        """Runs `ctr` against the node's containerd, in Kubernetes' namespace."""
        return _run(["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args])

    def process_ids(self) -> dict[str, int]:
        found = {n: p.pid for n, p in self._procs.items() if p.pid is not None and p.running()}
        if self.controlplane is not None:
            found.update(self.controlplane.process_ids())
        return found

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Locks the machine, snapshots it, then brings the node up and waits for it Ready."""
        if self.data_dir is not None:
            return
        missing = missing_parts(self.binaries)
        if missing:
            raise NodeError(
                f"a real node cannot run here, missing: {', '.join(missing)}; "
                "run scripts/setup as root on Linux"
            )
        began = time.monotonic()
        if self.images is None:
            self.images = build_images()
        self.timings["images"] = time.monotonic() - began
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(machine_lock())
        try:
            # A node killed without its teardown (SIGKILL, a power cut) left things behind: undo
            # them before taking the snapshot this run will be checked against.
            sweep(None, private_dir=None)
            self._state = MachineState.take()
            parent, prefix = os.path.split(PRIVATE_PREFIX)
            self.data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            began = time.monotonic()
            self._start_all()
            self.timings["start"] = time.monotonic() - began
            log.info("node ready", node=NODE_NAME, seconds=round(self.timings["start"], 2))
        except BaseException:
            with contextlib.suppress(NodeError):
                self.stop()
            raise

    def stop(self) -> None:
        """Stops everything, undoes every change and fails if the machine differs from before."""
        if self._lock is None:
            return
        try:
            began = time.monotonic()
            self._stop_all()
            if self.keep_logs is not None and self.data_dir is not None:
                shutil.copytree(self.data_dir / "logs", self.keep_logs, dirs_exist_ok=True)
                shutil.copytree(
                    self.data_dir / "controlplane" / "logs", self.keep_logs, dirs_exist_ok=True
                )
            sweep(self._state, private_dir=self.data_dir)
            self.timings["stop"] = time.monotonic() - began
            if self._state is not None:
                left = self._state.differences(MachineState.take())
                if left:
                    raise NodeError("the node left the machine changed:\n  " + "\n  ".join(left))
        finally:
            self.data_dir = None
            self._state = None
            lock, self._lock = self._lock, None
            lock.close()

    def check_machine(self) -> list[str]:
        """Differences from the snapshot that a running node does not explain (for tests)."""
        if self._state is None:
            raise NodeError("node not started")
        return self._state.differences(MachineState.take())

    # -- bringing it up ---------------------------------------------------------------------

    def _start_all(self) -> None:
        d = self.private_dir
        for sub in ("logs", "cni", "ipam", "kubelet", "runc"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self._saved_sysctls = {name: _read_sysctl(name) for name in _RESTORED_SYSCTLS}
        self._network_up()
        began = time.monotonic()
        self.controlplane = ControlPlane(
            binaries=self.binaries,
            data_dir=d / "controlplane",
            full=True,
            address=BRIDGE_IP,
            fake_node=False,
            service_accounts=True,
        )
        self.controlplane.start()
        self.timings["control plane"] = time.monotonic() - began
        began = time.monotonic()
        self._start_containerd()
        self.timings["containerd"] = time.monotonic() - began
        began = time.monotonic()
        self._load_images()
        self.timings["image import"] = time.monotonic() - began
        began = time.monotonic()
        for hierarchy in _cgroup_hierarchies():
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
        self._start_kubelet()
        self._wait_ready()
        self._start_kube_proxy()
        self._restore_sysctls()
        self.timings["kubelet ready"] = time.monotonic() - began

    def _network_up(self) -> None:
        """The bridge with its address (the apiserver listens there), the Service range routed
        to it, forwarding on (pod to Service to pod), and the guard keeping 198.18.0.0/15 home."""
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        _run(["ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, "src", BRIDGE_IP])
        _write_sysctl("net/ipv4/ip_forward", "1")
        _run(["nft", "-f", "-"], input_text=guard_ruleset(uplinks()))

    def _start_containerd(self) -> None:
        d = self.private_dir
        assert self.images is not None
        config = d / "containerd.toml"
        config.write_text(_containerd_config(d, self.images.pause.ref))
        (d / "cni" / "10-rainbowd.conflist").write_text(json.dumps(_cni_config(d), indent=2))
        proc = self._process("containerd", ["containerd", f"--config={config}"])
        wait_until(
            lambda: True if self.ctr("version") else None,
            timeout=_START_TIMEOUT,
            what="answering on its socket",
            process=proc,
        )

    def _load_images(self) -> None:
        assert self.images is not None
        for image in self.images.all():
            self.ctr("images", "import", str(image.archive))
        listed = self.ctr("images", "list", "--quiet").split()
        for image in self.images.all():
            if not any(name.endswith(image.ref.split("/", 1)[1]) for name in listed):
                raise NodeError(f"{image.ref} not in containerd after import; it holds {listed}")

    def _start_kubelet(self) -> None:
        d = self.private_dir
        assert self.controlplane is not None
        pki = self.controlplane.pki
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": BRIDGE_IP,
            "port": self._ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self._ports.kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False,
            "resolvConf": "",
            "podLogsDir": str(d / "pod-logs"),
            "volumePluginDir": str(d / "volume-plugins"),
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            # The images were imported, not pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
        }
        path = d / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._process(
            "kubelet",
            [
                str(self.binaries / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={d / 'kubelet'}",
                # Not under --root-dir: its default is /var/lib/kubelet/pki.
                f"--cert-dir={d / 'kubelet-pki'}",
                f"--node-ip={BRIDGE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        d = self.private_dir
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": BRIDGE_IP,
            "clusterCIDR": POD_SUBNET,
            "nodePortAddresses": [f"{BRIDGE_IP}/32"],
            "healthzBindAddress": f"127.0.0.1:{self._ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{self._ports.proxy_metrics}",
            # Without br_netfilter, a reply from a pod to a pod on the same bridge would skip
            # the host's conntrack: masquerade Service traffic so replies come back through it.
            "masqueradeAll": True,
            # Zero: kube-proxy leaves the machine's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }
        path = d / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = self._process(
            "kube-proxy", [str(self.binaries / "kube-proxy"), f"--config={path}", "--v=1"]
        )

        def healthy() -> bool | None:
            url = f"http://127.0.0.1:{self._ports.proxy_healthz}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return True if resp.status == 200 else None

        wait_until(healthy, timeout=_READY_TIMEOUT, what="healthy (rules synced)", process=proc)

    def _wait_ready(self) -> None:
        assert self.controlplane is not None
        cp = self.controlplane

        def ready() -> bool | None:
            node = cp.request("GET", f"/api/v1/nodes/{NODE_NAME}")
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    return True
            return None

        wait_until(
            ready,
            timeout=_READY_TIMEOUT,
            what=f"node {NODE_NAME} Ready",
            process=self._procs["kubelet"],
        )

    def _restore_sysctls(self) -> None:
        """Puts back what kubelet set at its start (ip_forward stays on while the node runs)."""
        for name, value in self._saved_sysctls.items():
            if name == "net/ipv4/ip_forward" or value is None:
                continue
            if _read_sysctl(name) != value:
                log.info("restoring a sysctl kubelet changed", sysctl=name, value=value)
                _write_sysctl(name, value)

    def _process(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, log_path=self.log_path(name))
        self._procs[name] = proc
        proc.start()
        return proc

    # -- taking it down ---------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Pods first (so kubelet tears their sandboxes and networks down the proper way), then
        kube-proxy, kubelet, containerd and the control plane."""
        if self.controlplane is not None and "kubelet" in self._procs:
            with contextlib.suppress(Exception):
                self._delete_all_pods()
        for name in ("kube-proxy", "kubelet"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop(_STOP_TIMEOUT)
        if "containerd" in self._procs:
            with contextlib.suppress(NodeError, subprocess.SubprocessError):
                for task in self.ctr("tasks", "list", "--quiet").split():
                    self.ctr("tasks", "kill", "--signal=SIGKILL", task)
        proc = self._procs.pop("containerd", None)
        if proc is not None:
            proc.stop(_STOP_TIMEOUT)
        if self.controlplane is not None:
            self.controlplane.stop()
            self.controlplane = None

    def _delete_all_pods(self) -> None:
        assert self.controlplane is not None
        cp = self.controlplane
        # Cordoned, so the pods Deployments make again stay Pending instead of starting here.
        cp.request(
            "PATCH",
            f"/api/v1/nodes/{NODE_NAME}",
            {"spec": {"unschedulable": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        pods = cp.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={NODE_NAME}")
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            with contextlib.suppress(urllib.error.HTTPError):
                cp.request(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"gracePeriodSeconds": 0},
                )

        def sandboxes_gone() -> bool | None:
            return True if not self.ctr("tasks", "list", "--quiet").split() else None

        with contextlib.suppress(ProcessError):
            wait_until(sandboxes_gone, timeout=_PODS_GONE_TIMEOUT, what="every pod stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rainbowd_sandbox.node",
        description="Runs a real node (containerd, kubelet, kube-proxy) with its control plane "
        "until Ctrl-C, then restores the machine.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only say whether a node can run here (exit 0) or what is missing (exit 1)",
    )
    args = parser.parse_args(argv)
    if args.check:
        missing = missing_parts()
        print(f"a real node cannot run here, missing: {', '.join(missing)}" if missing else "ok")
        return 1 if missing else 0
    setup_logging("INFO", "text")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    node = Node()
    try:
        node.start()
    except (NodeError, ControlPlaneError, ProcessError) as exc:
        print(f"error: {exc}")
        return 1
    try:
        print(f"export KUBECONFIG={node.kubeconfig}")
        print(f"started in {node.timings.get('start', 0):.1f}s; press Ctrl-C to stop", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping")
    finally:
        try:
            node.stop()
        except NodeError as exc:
            print(f"error: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
