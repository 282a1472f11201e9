"""Child processes of the sandbox: start with logs captured, poll readiness, stop for sure; and
the data folder each server keeps its files in.

Every child runs in its own process group, dies with its parent (PR_SET_PDEATHSIG) and is killed at
interpreter exit, so neither a failing test nor a killed Python leaves a server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from rainbowd.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40


class ProcessError(RuntimeError):
    """A child process failed to start, exited early, or never became ready."""


# A port is chosen now and listened on later, often by another process, sometimes a minute later
# (the sandbox prints its live page's address before it starts the control plane). So it is not
# one the kernel hands out (`bind` to port 0, and every outgoing connection's local port, come
# from its ephemeral range: a connection made meanwhile could take it), but one below that range
# and below Kubernetes' NodePorts, reserved for RESERVED_FOR against every other caller of
# free_port on the machine (a file per port under PORTS_DIR, claimed under an exclusive lock),
# and free right now.
PORTS_DIR = Path(tempfile.gettempdir()) / "rainbowd-ports"
RESERVED_FOR = 600.0
_BELOW_EPHEMERAL = 12_000  # how many ports below the ephemeral range to choose from
_LOWEST = 10_000
_NODE_PORTS = 30_000  # where Kubernetes' NodePorts start (a real node's kube-proxy holds them)
_TRIES = 200


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of local ports for `bind` to 0 and outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the kernel's ephemeral
    range, and that no other caller of free_port on the machine was given in the last
    RESERVED_FOR seconds (see PORTS_DIR above)."""
    top = min(ephemeral_ports()[0], _NODE_PORTS)
    low = max(_LOWEST, top - _BELOW_EPHEMERAL)
    if top - low >= 1_000:
        PORTS_DIR.mkdir(exist_ok=True)
        for _ in range(_TRIES):
            port = low + secrets.randbelow(top - low)
            if _reserve(port) and _bindable(port):
                return port
    # No room below the ephemeral range, or nothing left in it: one the kernel chooses.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _reserve(port: int) -> bool:
    """Claims `port` unless another caller holds its claim (fresh, or being made)."""
    try:
        fd = os.open(PORTS_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # another user's claim, or no room: not this port
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        now = time.time()
        claimed = os.read(fd, 64).decode(errors="replace").strip()
        with contextlib.suppress(ValueError):
            if now - float(claimed) < RESERVED_FOR:
                return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{now:.3f}".encode())
        return True
    finally:
        os.close(fd)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def make_data_dir(given: Path | None, prefix: str) -> Path:
    """`given`, made if missing, else a fresh temporary folder named `prefix...`."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    given.mkdir(parents=True, exist_ok=True)
    return given


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the Python test process is killed (even with
    # SIGKILL) the kernel sends SIGKILL to the child, which atexit alone could never do.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command name, which is in parentheses and may itself contain spaces:
    # [0] is the state, [19] the start time in clock ticks since boot.
    return stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, names one process for sure."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def pid_alive(pid: int, started: int | None = None) -> bool:
    """True when `pid` exists and is not a zombie (a zombie is dead, only not yet reaped).

    With `started` (from `start_time`), a recycled pid now used by another process counts as dead.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


_spawner_lock = threading.Lock()
_spawner_pool: ThreadPoolExecutor | None = None


def _spawner() -> ThreadPoolExecutor:
    global _spawner_pool
    with _spawner_lock:
        if _spawner_pool is None:
            _spawner_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")
        return _spawner_pool


class Process:
    """One named child process with its output in `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        if self.running():
            return
        self.stop()  # a previous run that exited by itself: reap it, close its log
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"--- start {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, not the process: fork from
        # one thread that lives as long as the interpreter, so a child started from a short-lived
        # worker (asyncio.to_thread) does not die with that worker.
        try:
            self._popen = (
                _spawner()
                .submit(
                    subprocess.Popen,
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                .result()
            )
        except OSError as exc:
            self._log_file.close()
            self._log_file = None
            raise ProcessError(f"{self.name} cannot start: {exc}") from exc
        _registry.add(self)
        log.debug("process started", name=self.name, pid=self._popen.pid)

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout` seconds, then reap."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("process ignored SIGTERM, killing", name=self.name, pid=popen.pid)
                self._signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
        # Grandchildren (none of ours fork, but a wrapper might) share the group: take them too.
        self._signal_group(popen.pid, signal.SIGKILL)
        self._popen = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _registry.discard(self)
        log.debug("process stopped", name=self.name, pid=popen.pid, code=popen.returncode)

    def kill(self) -> None:
        if self._popen is not None:
            self._signal_group(self._popen.pid, signal.SIGKILL)
        self.stop(timeout=5.0)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, what: str) -> ProcessError:
        """An error naming the process, its exit status and the tail of its log."""
        code = self.returncode()
        state = f"exited with code {code}" if code is not None else "still running"
        return ProcessError(
            f"{self.name} {what} ({state}); log {self.log_path}, last lines:\n{self.log_tail()}"
        )


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    process: Process | None = None,
    interval: float = 0.05,
) -> T:
    """Polls `check` until it returns a value that is not None, or fails after `timeout` seconds.

    Exceptions from `check` count as "not yet" (a server still starting refuses connections). When
    `process` exits meanwhile, fails at once with its log tail instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except Exception as exc:
            last_error = exc
        else:
            if result is not None:
                return result
        if process is not None and not process.running():
            raise process.fail(f"exited while waiting for {what}")
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            if process is not None:
                raise process.fail(f"not {what} after {timeout:.0f}s{detail}")
            raise ProcessError(f"not {what} after {timeout:.0f}s{detail}")
        time.sleep(interval)


class _Registry:
    """Every started, not yet stopped child of this interpreter, killed at exit."""

    def __init__(self) -> None:
        self._procs: set[Process] = set()
        self._started: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()
        atexit.register(self.kill_all)

    def add(self, proc: Process) -> None:
        with self._lock:
            self._procs.add(proc)
            if proc.pid is not None:
                self._started.append((proc.name, proc.pid, start_time(proc.pid)))

    def started(self) -> list[tuple[str, int, int | None]]:
        with self._lock:
            return list(self._started)

    def discard(self, proc: Process) -> None:
        with self._lock:
            self._procs.discard(proc)

    def running(self) -> list[Process]:
        with self._lock:
            return [p for p in self._procs if p.running()]

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            proc.kill()


_registry = _Registry()


def running_processes() -> list[Process]:
    """Children started through this module and not stopped yet (for leak checks)."""
    return _registry.running()


def started_processes() -> list[tuple[str, int, int | None]]:
    """(name, pid, start time) of every child ever started here, stopped or not."""
    return _registry.started()


def kill_all() -> None:
    _registry.kill_all()
