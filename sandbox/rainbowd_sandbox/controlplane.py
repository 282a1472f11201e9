"""A real Kubernetes control plane on loopback: etcd and kube-apiserver, optionally with
kube-controller-manager, kube-scheduler and kwok serving one fake Node, for tests and the sandbox.

Binaries come from `tests/cluster/build`; `python -m rainbowd_sandbox.controlplane` runs one.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from rainbowd.logs import get_logger, setup_logging
from rainbowd_sandbox import buildcache
from rainbowd_sandbox.certs import Pki, write_pki
from rainbowd_sandbox.procs import Process, ProcessError, free_port, make_data_dir, wait_until

log = get_logger(__name__)

BIN_DIR_ENV = "RAINBOWD_CONTROLPLANE_BIN"
# The fake Node's pod capacity. Not a kubelet's 110: tests share one control plane, and the pods
# of namespaces earlier tests deleted hold their places until the namespace controller and kwok
# have finished with them, which on a busy machine leaves a burst of new pods Pending for minutes.
FAKE_NODE_PODS = 1000
# How often the HPA controller looks at each HPA (15s in a real cluster): short, so a test sees
# several of its passes in seconds. With no metrics API it still enforces minReplicas and
# maxReplicas, and only that.
HPA_SYNC_PERIOD = 2.0
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BUILD_COMMAND = "tests/cluster/build"
FAKE_NODE = "kwok-node-0"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Pods and Services live in the benchmarking range 198.18.0.0/15, which no real network uses:
# pods in 198.18.0.0/16 (kwok's fake ones, or a real node's bridge), Services in 198.19.0.0/16.
SERVICE_CLUSTER_IP_RANGE = "198.19.0.0/16"
KUBERNETES_SERVICE_IP = "198.19.0.1"
"""The `kubernetes` Service's ClusterIP (the range's first address): pods reach the apiserver
there, so the apiserver's serving certificate carries it."""
_KWOK_NODE_IP = "198.18.0.1"

# A cold apiserver start includes etcd schema bootstrap and RBAC/APF defaults: seconds on an idle
# machine, much longer on a 2-core box compiling something else.
_START_TIMEOUT = 90.0
_REQUEST_TIMEOUT = 30.0
"""Seconds for one admin call: a CRD's DELETE took over 10 s with the machine at a load average of
20 (two suites, a Go build and benchmarks at once)."""
_STOP_TIMEOUT = 15.0
_PORT_ATTEMPTS = 3


# What the apiserver audits: the calls rainbowd makes, at Metadata level (no bodies), once per
# request. Node leases (kwok's heartbeats) and everything else are left out to keep it small.
_AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
    "rules": [
        {"level": "None", "namespaces": ["kube-node-lease"]},
        {
            "level": "Metadata",
            "resources": [
                {"group": "", "resources": ["services", "configmaps", "pods"]},
                {"group": "apps", "resources": ["deployments", "deployments/scale"]},
                {"group": "coordination.k8s.io", "resources": ["leases"]},
                {"group": "events.k8s.io", "resources": ["events"]},
                {"group": "autoscaling", "resources": ["horizontalpodautoscalers"]},
                {"group": "policy", "resources": ["poddisruptionbudgets"]},
                {"group": "keda.sh", "resources": ["scaledobjects"]},
            ],
        },
        {"level": "None"},
    ],
}


class ControlPlaneError(RuntimeError):
    """The control plane cannot start: binaries missing, or a component failed."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _versions_file() -> Path:
    return _repo_root() / "tests" / "cluster" / "versions"


def in_checkout() -> bool:
    """Whether rainbowd runs from its source checkout (not an installed package)."""
    return _versions_file().exists()


def kubernetes_version() -> str:
    """The Kubernetes version pinned in tests/cluster/versions."""
    versions = _versions_file()
    try:
        text = versions.read_text()
    except OSError as exc:
        raise ControlPlaneError(f"cannot read {versions}: {exc.strerror}") from None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "KUBERNETES_VERSION":
            return value.strip()
    raise ControlPlaneError(f"no KUBERNETES_VERSION in {versions}")


def default_binaries_dir() -> Path:
    """$RAINBOWD_CONTROLPLANE_BIN, else where tests/cluster/build puts the pinned version in a
    checkout: the per-user build cache's entry for it. An installed package has no checkout:
    without the variable, ControlPlaneError."""
    env = os.environ.get(BIN_DIR_ENV)
    if env:
        return Path(env)
    if not in_checkout():
        raise ControlPlaneError(
            f"no control-plane binaries ({', '.join(BINARIES)}): rainbowd runs from an installed "
            f"package, not from a checkout, and ${BIN_DIR_ENV} is not set; build them in a "
            f"rainbowd checkout with `make setup` ({BUILD_COMMAND}; "
            f"`{BUILD_COMMAND} --print-bin-dir` prints where) and set ${BIN_DIR_ENV} to that folder"
        )
    try:
        return buildcache.entry("controlplane", root=_repo_root()) / "bin"
    except (buildcache.CacheError, OSError) as exc:
        raise ControlPlaneError(f"no control-plane binaries: {exc}") from None


def missing_binaries(binaries: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(binaries / b, os.X_OK)]


def audit_events(text: str) -> list[dict[str, Any]]:
    """The events of an audit log's text (JSON lines). The apiserver may be halfway through
    writing the last line when the file is read: only whole lines count."""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


class ControlPlane:
    """etcd + kube-apiserver (+ controller-manager, scheduler, kwok) on free loopback ports.

    Use as a context manager or call `start()`/`stop()`. Data (etcd, certificates, kubeconfig,
    one log file per process) lives in `data_dir`, a fresh temporary folder unless given.

    For a real node (rainbowd_sandbox.node), `address` is the node bridge's address: the
    apiserver listens and advertises there, so pods reach it through the `kubernetes` Service;
    `fake_node=False` leaves kwok out, and `service_accounts` turns on the admission that mounts
    each pod's ServiceAccount token.
    """

    def __init__(
        self,
        *,
        binaries: Path | None = None,
        data_dir: Path | None = None,
        full: bool = False,
        start_timeout: float = _START_TIMEOUT,
        address: str = "127.0.0.1",
        fake_node: bool = True,
        service_accounts: bool = False,
        hpa_sync_period: float = HPA_SYNC_PERIOD,
    ) -> None:
        self.binaries = binaries if binaries is not None else default_binaries_dir()
        self.address = address
        self.fake_node = fake_node
        self.service_accounts = service_accounts
        self.hpa_sync_period = hpa_sync_period
        self._own_data_dir = data_dir is None
        self._data_dir_arg = data_dir
        self.full = full
        self.start_timeout = start_timeout
        self.timings: dict[str, float] = {}
        self._data_dir: Path | None = None
        self._pki: Pki | None = None
        self._procs: dict[str, Process] = {}
        self._etcd_port = 0
        self._etcd_peer_port = 0
        self._apiserver_port = 0
        self._ssl: ssl.SSLContext | None = None
        self._full_started = False

    # -- paths and addresses ------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise ControlPlaneError("control plane not started")
        return self._data_dir

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            raise ControlPlaneError("control plane not started")
        return self._pki

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._etcd_port}"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def client_cert(self) -> Path:
        return self.pki.admin_cert

    @property
    def client_key(self) -> Path:
        return self.pki.admin_key

    def process_ids(self) -> dict[str, int]:
        """Pids of the running components, by name."""
        return {
            name: proc.pid
            for name, proc in self._procs.items()
            if proc.pid is not None and proc.running()
        }

    def log_path(self, component: str) -> Path:
        return self.data_dir / "logs" / f"{component}.log"

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Starts etcd and kube-apiserver (and the rest when `full`), each polled until ready."""
        if self._data_dir is not None:
            return
        missing = missing_binaries(self.binaries)
        if missing:
            raise ControlPlaneError(
                f"control-plane binaries missing in {self.binaries}: {', '.join(missing)}; "
                f"build them with: {BUILD_COMMAND} (in a rainbowd checkout), or set "
                f"${BIN_DIR_ENV} to a folder holding them"
            )
        began = time.monotonic()
        self._data_dir = make_data_dir(self._data_dir_arg, "rainbowd-controlplane-")
        try:
            self._pki = write_pki(
                self.data_dir / "pki",
                ip_addresses=tuple(
                    dict.fromkeys(("127.0.0.1", self.address, KUBERNETES_SERVICE_IP))
                ),
            )
            self._ssl = ssl.create_default_context(cafile=str(self._pki.ca_cert))
            self._ssl.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
            self._start_core()
            self.timings["start"] = time.monotonic() - began
            log.info(
                "control plane started",
                server=self.server,
                kubeconfig=str(self.kubeconfig),
                seconds=round(self.timings["start"], 2),
            )
            if self.full:
                self.start_full()
        except BaseException:
            self.stop(keep_data=True)
            raise

    def start_full(self) -> None:
        """Adds kube-controller-manager, kube-scheduler, kwok and the fake Node; idempotent."""
        if self._full_started:
            return
        began = time.monotonic()
        self.full = True
        self._start_controller_manager()
        self._start_scheduler()
        if self.fake_node:
            self._start_kwok()
            self._create_fake_node()
        self._full_started = True
        self.timings["start_full"] = time.monotonic() - began
        log.info(
            "control plane components started",
            node=FAKE_NODE if self.fake_node else None,
            seconds=round(self.timings["start_full"], 2),
        )

    def stop(self, *, keep_data: bool = False) -> None:
        """Stops every component (SIGTERM, SIGKILL after a deadline) and removes owned data."""
        # Clients of the apiserver first, so they do not log a storm of connection errors.
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop(_STOP_TIMEOUT)
        self._full_started = False
        if self._data_dir is not None and self._own_data_dir and not keep_data:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None

    def _start_core(self) -> None:
        # A free port can be taken by someone else before our server binds it (parallel test
        # runs on one machine); pick new ports and try again rather than fail the session.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._etcd_port = free_port()
            self._etcd_peer_port = free_port()
            self._apiserver_port = free_port()
            self._write_kubeconfig()
            try:
                self._start_etcd()
                self._start_apiserver_process()
                return
            except ProcessError as exc:
                if attempt == _PORT_ATTEMPTS or "address already in use" not in str(exc):
                    raise
                log.warning("port taken, retrying with new ports", attempt=attempt)
                for name in ("kube-apiserver", "etcd"):
                    proc = self._procs.pop(name, None)
                    if proc is not None:
                        proc.stop(_STOP_TIMEOUT)
                shutil.rmtree(self.data_dir / "etcd", ignore_errors=True)

    def apiserver_running(self) -> bool:
        proc = self._procs.get("kube-apiserver")
        return proc is not None and proc.running()

    def ensure_running(self) -> None:
        """Starts etcd and kube-apiserver again if a test stopped them and did not restart them."""
        etcd = self._procs.get("etcd")
        if etcd is not None and not etcd.running():
            self.start_etcd()
        if not self.apiserver_running():
            self.start_apiserver()

    def stop_etcd(self) -> None:
        proc = self._procs.get("etcd")
        if proc is not None:
            proc.stop(_STOP_TIMEOUT)

    def start_etcd(self) -> None:
        """Starts etcd again on the same ports with the same data."""
        self._start_etcd()

    def restart_etcd(self) -> None:
        self.stop_etcd()
        self.start_etcd()

    def stop_apiserver(self) -> None:
        proc = self._procs.get("kube-apiserver")
        if proc is not None:
            proc.stop(_STOP_TIMEOUT)

    def start_apiserver(self) -> None:
        """Starts kube-apiserver again on the same port with the same etcd data."""
        self._start_apiserver_process()

    def restart_apiserver(self) -> None:
        """Stops and starts kube-apiserver. The controller-manager's informers reconnect with
        client-go's backoff, so after a few outages in a row rollouts may stall for up to ~30 s."""
        self.stop_apiserver()
        self.start_apiserver()

    # -- talking to the apiserver -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One admin call to the apiserver; decoded JSON, or the text for non-JSON answers."""
        raw = self._request_raw(method, path, body, headers=headers)
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def apiserver_metrics(self) -> str:
        """The apiserver's own /metrics (Prometheus text), read with the admin certificate."""
        return self._request_raw("GET", "/metrics")

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The apiserver's audit events so far (completed requests to the audited resources:
        Deployments and their scale, Services, ConfigMaps, Pods, Leases outside
        kube-node-lease), each with verb, objectRef, userAgent and responseStatus."""
        try:
            text = self.audit_log.read_text()
        except FileNotFoundError:
            return []
        return audit_events(text)

    def _write_audit_policy(self) -> Path:
        path = self.data_dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(_AUDIT_POLICY, sort_keys=False))
        return path

    def create_namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def delete_namespace(self, name: str) -> None:
        try:
            self.request("DELETE", f"/api/v1/namespaces/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def _request_raw(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = _REQUEST_TIMEOUT,
    ) -> str:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json, */*")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
            text: str = resp.read().decode()
            return text

    # -- components ---------------------------------------------------------------------------

    def _process(self, name: str, args: list[str]) -> Process:
        proc = Process(name, [str(self.binaries / name), *args], log_path=self.log_path(name))
        self._procs[name] = proc
        proc.start()
        return proc

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        proc = self._process(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # Test data is thrown away: fsync would only make every write wait on the disk.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool | None:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return True if json.loads(resp.read()).get("health") == "true" else None

        wait_until(healthy, timeout=self.start_timeout, what="healthy", process=proc)

    def _start_apiserver_process(self) -> None:
        pki = self.pki
        proc = self._process(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={self._apiserver_port}",
                f"--bind-address={self.address}",
                # Without it the apiserver looks for a default route, which a sandbox may lack.
                f"--advertise-address={self.address}",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # Without a real kubelet nothing mounts tokens; pods must not wait for a
                # ServiceAccount the controller-manager may not have made yet.
                *(() if self.service_accounts else ("--disable-admission-plugins=ServiceAccount",)),
                # How the apiserver authenticates to a real node's kubelet (logs, exec).
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                # The node's IP, never its name: no DNS lookup leaves the machine.
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                "--shutdown-watch-termination-grace-period=2s",
                # The apiserver's own record of who called what (verb, resource, user agent),
                # written before each response ("blocking"), so tests can count one client's
                # calls exactly; apiserver_request_total cannot tell clients apart.
                f"--audit-policy-file={self._write_audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
            ],
        )

        def ready() -> bool | None:
            return True if self._request_raw("GET", "/readyz", timeout=2) == "ok" else None

        began = time.monotonic()
        wait_until(ready, timeout=self.start_timeout, what="ready (/readyz)", process=proc)
        self.timings["apiserver_ready"] = time.monotonic() - began

    def _start_controller_manager(self) -> None:
        pki = self.pki
        proc = self._process(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--controllers=*",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca_cert}",
                # kwok renews the fake Node's lease every 40s; leave it room before NotReady.
                "--node-monitor-grace-period=50s",
                f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period:g}s",
            ],
        )

        # The root-CA publisher writes this ConfigMap into every namespace once its informers
        # synced: a sign that the controllers run, since --secure-port=0 leaves no /healthz.
        def running() -> bool | None:
            try:
                self.request("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                raise
            return True

        wait_until(running, timeout=self.start_timeout, what="running controllers", process=proc)

    def _start_scheduler(self) -> None:
        self._process(
            "kube-scheduler",
            [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0"],
        )

    def _start_kwok(self) -> None:
        stages = self.data_dir / "kwok-stages.yaml"
        stages.write_text(
            resources.files("rainbowd_sandbox").joinpath("kwok-stages.yaml").read_text()
        )
        key, value = FAKE_NODE_ANNOTATION
        self._process(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                f"--cidr={_KWOK_NODE_IP}/16",
                f"--node-ip={_KWOK_NODE_IP}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )

    def _create_fake_node(self) -> None:
        resources_ = {"cpu": "32", "memory": "256Gi", "pods": str(FAKE_NODE_PODS)}
        key, value = FAKE_NODE_ANNOTATION
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": FAKE_NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {"capacity": resources_, "allocatable": resources_},
        }
        try:
            self.request("POST", "/api/v1/nodes", node)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # a restarted start_full() on the same etcd data
                raise

        def node_ready() -> bool | None:
            got = self.request("GET", f"/api/v1/nodes/{FAKE_NODE}")
            for cond in got.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    return True
            return None

        wait_until(
            node_ready,
            timeout=self.start_timeout,
            what=f"node {FAKE_NODE} Ready",
            process=self._procs["kwok"],
        )

    def _write_kubeconfig(self) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        name = "rainbowd-sandbox"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(self.pki.admin_cert),
                        "client-key-data": b64(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
            "current-context": name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rainbowd_sandbox.controlplane",
        description="Runs a loopback Kubernetes control plane with one fake node until Ctrl-C.",
    )
    parser.add_argument("--data-dir", type=Path, help="keep data here (default: a temp folder)")
    parser.add_argument(
        "--minimal", action="store_true", help="only etcd and kube-apiserver (no pods run)"
    )
    args = parser.parse_args(argv)
    setup_logging("INFO", "text")

    # Ctrl-C and SIGTERM both end the wait below and fall through to a clean stop.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    cp = ControlPlane(data_dir=args.data_dir, full=not args.minimal)
    try:
        cp.start()
    except (ControlPlaneError, ProcessError) as exc:
        print(f"error: {exc}")
        return 1
    try:
        print(f"kubeconfig: {cp.kubeconfig}")
        print(f"export KUBECONFIG={cp.kubeconfig}")
        seconds = cp.timings.get("start", 0.0) + cp.timings.get("start_full", 0.0)
        print(f"started in {seconds:.1f}s; press Ctrl-C to stop", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping")
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
