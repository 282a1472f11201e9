"""Every setting of `rainbowd run`: one frozen dataclass, from flags with RAINBOWD_* defaults.

A flag wins over its environment variable, which wins over the default. A bad value raises
SettingsError naming the flag or the variable it came from; the command turns it into exit 2.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainbowd.core import durations

ENV_PREFIX = "RAINBOWD_"
# Where Kubernetes mounts a pod's service-account namespace: the in-cluster convention.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A flag or environment variable has a value rainbowd cannot use."""


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where the policy comes from: a ConfigMap (namespace/name) or a file, exactly one."""

    configmap_namespace: str | None = None
    configmap_name: str | None = None
    file: str | None = None

    @property
    def is_configmap(self) -> bool:
        return self.configmap_name is not None

    def describe(self) -> str:
        if self.file is not None:
            return f"file:{self.file}"
        return f"configmap:{self.configmap_namespace}/{self.configmap_name}"


@dataclass(frozen=True, slots=True)
class Settings:
    policy: PolicySource = field(default_factory=lambda: PolicySource(file="policy.yaml"))
    """The policy source. No sensible default exists, so the command line requires one."""
    kubeconfig: str | None = None
    """Path to a kubeconfig; None: in-cluster config, else $KUBECONFIG / ~/.kube/config."""
    context: str | None = None
    """kubeconfig context; None: the file's current context."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to manage; empty: all. Fewer namespaces means smaller watches."""
    selector: str = ""
    """Label selector on Deployments' own labels, applied server-side to the watch; empty: all."""
    interval: float = 30.0
    """Seconds between cycles. Connections change without Kubernetes events, so a timer drives
    the loop; 30 s matches a typical Prometheus scrape interval (faster sees no new data)."""
    debounce: float = 1.0
    """Seconds to gather watch events before an early cycle: a rollout sends a burst of them,
    and one cycle after the burst is enough."""
    kube_qps: float = 100.0
    """Writes a second to the apiserver, sustained (client-go's QPS): stamps, scale-downs,
    deletes, pod marks. 100 stamps 10,000 Deployments found at a first start in under two
    minutes; reads go through watches and are not paced."""
    kube_burst: int = 200
    """Writes at once after a quiet spell (client-go's Burst)."""
    listen_host: str = ""
    """Address for /metrics, /healthz, /readyz and /status; empty: every interface."""
    listen_port: int = 8080
    """Port for the HTTP server; 8080 is what the k8s/ manifests and probes expect."""
    leader_elect: bool = False
    """Take a Lease before acting, so only one replica acts. Defaults to on in a cluster (where
    several replicas may run) and off elsewhere (a developer's single process)."""
    lease_namespace: str = "default"
    """Namespace of the Lease; defaults to the pod's own namespace in a cluster."""
    lease_name: str = "rainbowd"
    """Name of the Lease object."""
    lease_duration: float = 15.0
    """Seconds a lease holder is trusted without renewing; client-go's default. A standby takes
    over at most this long after the leader vanishes without releasing."""
    renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before it gives up leading (client-go's default);
    must be below lease_duration so it stops acting before anyone else may start."""
    retry_period: float = 2.0
    """Seconds between lease attempts (client-go's default)."""
    identity: str = ""
    """This replica's name in the Lease and in Events' reportingInstance; default hostname-pid."""
    once: bool = False
    """Run one cycle after the caches sync, then exit: for cron jobs and trying a policy."""
    dry_run: bool = False
    """Plan and report, write nothing (the policy's dryRun does the same). The daemon keeps
    the bookkeeping stamps it would have written (retired-at, drained-since...) in memory and
    lays them over the next snapshots, so retired ages and drain holds advance across cycles
    as they would for real and the plan shows the scale-downs that would follow; a restart
    forgets them."""
    log_format: str = "json"
    """json for log collectors, text for a terminal."""
    log_level: str = "info"
    """Lowest level logged."""
    shutdown_timeout: float = 10.0
    """Seconds from SIGTERM to exit: enough for an in-flight API call (default timeouts are a
    few seconds) and the lease release, below Kubernetes' 30 s grace period."""

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def health_max_age(self) -> float:
        """Seconds without a finished cycle before /healthz fails: three missed cycles, and at
        least a minute so a slow Prometheus (10 s timeout) does not get the pod restarted."""
        return max(3 * self.interval, 60.0)

    def summary(self) -> dict[str, Any]:
        """The effective configuration, for the start-up log line and /status."""
        return {
            "policy": self.policy.describe(),
            "kubeconfig": self.kubeconfig or "",
            "context": self.context or "",
            "namespaces": ",".join(self.namespaces) or "*",
            "selector": self.selector,
            "interval": self.interval,
            "debounce": self.debounce,
            "kube_qps": self.kube_qps,
            "kube_burst": self.kube_burst,
            "listen": self.listen,
            "leader_elect": self.leader_elect,
            "lease": f"{self.lease_namespace}/{self.lease_name}",
            "lease_duration": self.lease_duration,
            "identity": self.identity,
            "once": self.once,
            "dry_run": self.dry_run,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "shutdown_timeout": self.shutdown_timeout,
        }


# --- value parsers: each takes the text and returns the value or raises ValueError ---------


def parse_duration(text: str) -> float:
    """A Go duration (`30s`, `1m30s`, `500ms`, `1.5h`) to seconds, as the policy writes them."""
    return durations.parse_duration(text).total_seconds()


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {text!r}")
    return seconds


def _positive_number(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number greater than zero, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _non_negative_duration(text: str) -> float:
    return parse_duration(text)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_listen(text: str) -> tuple[str, int]:
    """`:8080`, `127.0.0.1:8080` or `[::1]:8080` to (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT or :PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected a port number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return host, port


def parse_namespaces(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if not _DNS_LABEL.fullmatch(name):
            raise ValueError(f"not a namespace name: {name!r}")
    return names


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def parse_configmap_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.strip().partition("/")
    if not sep or not _DNS_LABEL.fullmatch(namespace) or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def _choice(options: tuple[str, ...]) -> Any:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return value

    return parse


def _name(text: str) -> str:
    value = text.strip()
    if not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"not a valid object name: {text!r}")
    return value


def _nonempty(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def in_cluster(environ: Mapping[str, str]) -> bool:
    return "KUBERNETES_SERVICE_HOST" in environ


def _own_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


# --- flags ----------------------------------------------------------------------------------


def env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every cluster-reading command shares: where the cluster is, what to manage, and
    where the policy comes from. Defaults are None so `settings_from_args` can tell "not given"
    and fall back to the environment."""
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file [RAINBOWD_KUBECONFIG]"
    )
    parser.add_argument("--context", help="kubeconfig context [RAINBOWD_CONTEXT]")
    parser.add_argument(
        "--namespaces",
        metavar="NS,NS",
        help="comma-separated namespaces to manage; default all [RAINBOWD_NAMESPACES]",
    )
    parser.add_argument(
        "--selector",
        metavar="LABELS",
        help="label selector on Deployments, e.g. tier=chat [RAINBOWD_SELECTOR]",
    )
    parser.add_argument(
        "--policy-configmap",
        metavar="NAMESPACE/NAME",
        help="read the policy from this ConfigMap's policy.yaml [RAINBOWD_POLICY_CONFIGMAP]",
    )
    parser.add_argument(
        "--policy-file", metavar="PATH", help="read the policy from a file [RAINBOWD_POLICY_FILE]"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of `rainbowd run`."""
    add_cluster_arguments(parser)
    parser.add_argument(
        "--interval", metavar="DURATION", help="time between cycles (30s) [RAINBOWD_INTERVAL]"
    )
    parser.add_argument(
        "--debounce",
        metavar="DURATION",
        help="gather watch events this long before an early cycle (1s) [RAINBOWD_DEBOUNCE]",
    )
    parser.add_argument(
        "--kube-qps",
        metavar="N",
        help="writes a second to the apiserver, sustained (100) [RAINBOWD_KUBE_QPS]",
    )
    parser.add_argument(
        "--kube-burst",
        metavar="N",
        help="writes at once after a quiet spell (200) [RAINBOWD_KUBE_BURST]",
    )
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="HTTP address (:8080) [RAINBOWD_LISTEN]"
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold a Lease before acting (default: on in a cluster) [RAINBOWD_LEADER_ELECT]",
    )
    parser.add_argument(
        "--lease-namespace",
        metavar="NS",
        help="namespace of the Lease (default: the pod's) [RAINBOWD_LEASE_NAMESPACE]",
    )
    parser.add_argument(
        "--lease-name", metavar="NAME", help="name of the Lease (rainbowd) [RAINBOWD_LEASE_NAME]"
    )
    parser.add_argument(
        "--lease-duration",
        metavar="DURATION",
        help="lease duration (15s) [RAINBOWD_LEASE_DURATION]",
    )
    parser.add_argument(
        "--renew-deadline",
        metavar="DURATION",
        help="give up leading after failing to renew this long (10s) [RAINBOWD_RENEW_DEADLINE]",
    )
    parser.add_argument(
        "--retry-period",
        metavar="DURATION",
        help="time between lease attempts (2s) [RAINBOWD_RETRY_PERIOD]",
    )
    parser.add_argument(
        "--identity", help="name in the Lease and Events (hostname-pid) [RAINBOWD_IDENTITY]"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="run one cycle and exit [RAINBOWD_ONCE]",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="plan and report, change nothing [RAINBOWD_DRY_RUN]",
    )
    parser.add_argument(
        "--log-format", metavar="json|text", help="log format (json) [RAINBOWD_LOG_FORMAT]"
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning or error (info) [RAINBOWD_LOG_LEVEL]",
    )
    parser.add_argument(
        "--shutdown-timeout",
        metavar="DURATION",
        help="exit at most this long after SIGTERM (10s) [RAINBOWD_SHUTDOWN_TIMEOUT]",
    )


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


class _Reader:
    """Looks a setting up in the parsed flags, then the environment, naming the source on error."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ

    def raw(self, dest: str) -> tuple[Any, str] | None:
        value = getattr(self.args, dest, None)
        if value is not None:
            return value, _flag(dest)
        env = env_name(dest)
        if env in self.environ:
            return self.environ[env], env
        return None

    def get(self, dest: str, parse: Any, default: Any) -> Any:
        found = self.raw(dest)
        if found is None:
            return default
        value, source = found
        if not isinstance(value, str):
            return value  # a flag argparse already typed (store_true, BooleanOptionalAction)
        try:
            return parse(value)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None


def settings_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    require_policy: bool = True,
) -> Settings:
    """Resolve every setting: flag, else RAINBOWD_* variable, else default."""
    env = dict(os.environ if environ is None else environ)
    read = _Reader(args, env)
    defaults = Settings()

    configmap = read.get("policy_configmap", parse_configmap_ref, None)
    policy_file = read.get("policy_file", _nonempty, None)
    if configmap is not None and policy_file is not None:
        raise SettingsError(
            "--policy-configmap and --policy-file: give exactly one policy source, not both"
        )
    if configmap is not None:
        policy = PolicySource(configmap_namespace=configmap[0], configmap_name=configmap[1])
    elif policy_file is not None:
        policy = PolicySource(file=policy_file)
    elif require_policy:
        raise SettingsError(
            "--policy-configmap or --policy-file: a policy source is required "
            f"(or {env_name('policy_configmap')} / {env_name('policy_file')})"
        )
    else:
        policy = defaults.policy

    listen_host, listen_port = read.get(
        "listen", parse_listen, (defaults.listen_host, defaults.listen_port)
    )
    lease_duration = read.get("lease_duration", _positive_duration, defaults.lease_duration)
    renew_deadline = read.get("renew_deadline", _positive_duration, defaults.renew_deadline)
    retry_period = read.get("retry_period", _positive_duration, defaults.retry_period)
    if renew_deadline >= lease_duration:
        raise SettingsError(
            "--renew-deadline: must be shorter than --lease-duration, "
            f"got {renew_deadline:g}s >= {lease_duration:g}s"
        )
    if retry_period >= renew_deadline:
        raise SettingsError(
            "--retry-period: must be shorter than --renew-deadline, "
            f"got {retry_period:g}s >= {renew_deadline:g}s"
        )

    return Settings(
        policy=policy,
        kubeconfig=read.get("kubeconfig", _nonempty, None),
        context=read.get("context", _nonempty, None),
        namespaces=read.get("namespaces", parse_namespaces, ()),
        selector=read.get("selector", str.strip, ""),
        interval=read.get("interval", _positive_duration, defaults.interval),
        debounce=read.get("debounce", _non_negative_duration, defaults.debounce),
        kube_qps=read.get("kube_qps", _positive_number, defaults.kube_qps),
        kube_burst=read.get("kube_burst", _positive_int, defaults.kube_burst),
        listen_host=listen_host,
        listen_port=listen_port,
        leader_elect=read.get("leader_elect", parse_bool, in_cluster(env)),
        lease_namespace=read.get(
            "lease_namespace",
            _name,
            (_own_namespace() if in_cluster(env) else None) or defaults.lease_namespace,
        ),
        lease_name=read.get("lease_name", _name, defaults.lease_name),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        identity=read.get("identity", _nonempty, None) or default_identity(),
        once=read.get("once", parse_bool, False),
        dry_run=read.get("dry_run", parse_bool, False),
        log_format=read.get("log_format", _choice(LOG_FORMATS), defaults.log_format),
        log_level=read.get("log_level", _choice(LOG_LEVELS), defaults.log_level),
        shutdown_timeout=read.get(
            "shutdown_timeout", _positive_duration, defaults.shutdown_timeout
        ),
    )
