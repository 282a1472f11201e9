"""The per-user build cache that outlives a checkout: control-plane binaries, tools, images and
wheels, each an entry folder named by a key of its inputs, trusted only while its checksum
manifest matches, built by one process at a time and put in place by an atomic rename.

Standard library only: tests/cluster/build runs it (`python -m rainbowd_sandbox.buildcache`)
before the project is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

CACHE_ENV = "RAINBOWD_CACHE"
MANIFEST = ".manifest.json"
"""Written last, atomically: an entry without one (a build cut short) is not an entry."""
_CHUNK = 1 << 20
_PRUNE_UNUSED_FOR = 86400.0
"""Seconds: `prune` spares an entry used within the last day (another checkout, at another
commit, may use it)."""
_LOCK_TIMEOUT = 3600.0
"""Seconds to wait for another process building the same entry (a cold Go build takes ~15 min
on two busy cores)."""


class CacheError(RuntimeError):
    """An entry cannot be built or locked; the message says which and why."""


def cache_root() -> Path:
    """$RAINBOWD_CACHE, else $XDG_CACHE_HOME/rainbowd, else ~/.cache/rainbowd."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rainbowd"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


# -- keys ---------------------------------------------------------------------------------------


def digest(parts: Iterable[bytes]) -> str:
    """A digest of `parts` that no other split of the same bytes gives."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def files_digest(root: Path, names: Iterable[str]) -> str:
    """A digest of the named files and folders under `root`: their relative paths and bytes."""
    parts: list[bytes] = []
    for name in names:
        path = root / name
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in found:
            if "__pycache__" in file.parts:
                continue
            parts += [str(file.relative_to(root)).encode(), file.read_bytes()]
    return digest(parts)


@cache
def go_version() -> str:
    """`go env GOVERSION`: part of the key of everything Go builds."""
    go = shutil.which("go")
    if go is None:
        raise CacheError("go is not installed (Go >= 1.26 builds the control plane and tools)")
    done = subprocess.run(
        [go, "env", "GOVERSION"],
        capture_output=True,
        text=True,
        env={**os.environ, "GOTOOLCHAIN": "local"},
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise CacheError(f"go env GOVERSION failed: {done.stderr.strip()}")
    return done.stdout.strip()


_CLUSTER_INPUTS = ("versions", "go.mod", "go.sum", "tools.go", "cmd", "build")
# Thanos, for the query tests: a wrapper module and build script of its own, so pinning it
# never rebuilds the control plane.
_THANOS_INPUTS = ("go.mod", "go.sum", "build")
# Controllers built from their own Go module for the tests that run them against the test
# control plane (KEDA's operator, Argo Rollouts' controller): each keyed by its own folder's
# `versions` and `build`, named by the version that file pins.
_ADDON_INPUTS = ("versions", "build")
_ADDON_VERSIONS = {"keda": "KEDA_VERSION", "argo-rollouts": "ARGO_ROLLOUTS_VERSION"}
KINDS = ("controlplane", "tools", "thanos", *_ADDON_VERSIONS)


def _pinned(name: str, root: Path) -> str:
    for line in (root / "tests" / "cluster" / "versions").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise CacheError(f"{name} is not pinned in tests/cluster/versions")


def _thanos_version(folder: Path) -> str:
    for line in (folder / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == ["github.com/thanos-io/thanos"] and len(words) >= 2:
            return words[1]
    raise CacheError("github.com/thanos-io/thanos is not required in tests/cluster/thanos/go.mod")


def _addon_version(kind: str, folder: Path) -> str:
    pin = _ADDON_VERSIONS[kind]
    for line in (folder / "versions").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == pin and value.strip():
            return value.strip()
    raise CacheError(f"{pin} is not pinned in tests/cluster/{kind}/versions")


def entry(kind: str, *, root: Path | None = None) -> Path:
    """The entry tests/cluster/build fills for `kind` ("controlplane" or "tools"), or
    tests/cluster/thanos/build for "thanos", tests/cluster/<kind>/build for "keda" and
    "argo-rollouts": keyed by the pinned versions, the wrapper module, its build script and the
    Go that builds it. Thanos, KEDA and Argo Rollouts have inputs of their own, so pinning them
    never rebuilds the control plane."""
    root = root if root is not None else _repo_root()
    if kind not in KINDS:
        raise CacheError(f"no entry kind {kind!r}")
    if kind == "thanos":
        folder = root / "tests" / "cluster" / "thanos"
        key = digest([files_digest(folder, _THANOS_INPUTS).encode(), go_version().encode()])[:16]
        return cache_root() / kind / f"{_thanos_version(folder)}-{key}"
    if kind in _ADDON_VERSIONS:
        folder = root / "tests" / "cluster" / kind
        key = digest([files_digest(folder, _ADDON_INPUTS).encode(), go_version().encode()])[:16]
        return cache_root() / kind / f"{_addon_version(kind, folder)}-{key}"
    key = digest(
        [files_digest(root / "tests" / "cluster", _CLUSTER_INPUTS).encode(), go_version().encode()]
    )[:16]
    label = _pinned("KUBERNETES_VERSION", root) if kind == "controlplane" else "helm-crds"
    return cache_root() / kind / f"{label}-{key}"


# -- entries ------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def seal(folder: Path) -> None:
    """Writes the manifest of every file in `folder` (size, sha256, mode), atomically, last."""
    manifest = {
        str(p.relative_to(folder)): {
            "size": p.stat().st_size,
            "sha256": file_sha256(p),
            "executable": os.access(p, os.X_OK),
        }
        for p in _files(folder)
    }
    scratch = folder / f".{MANIFEST}.{os.getpid()}"
    with scratch.open("w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    scratch.replace(folder / MANIFEST)


def _manifest(folder: Path) -> dict[str, dict[str, object]] | None:
    try:
        loaded = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def good_files(folder: Path) -> list[str]:
    """The files of `folder` its manifest names that still match it."""
    manifest = _manifest(folder)
    if manifest is None:
        return []
    good = []
    for name, want in manifest.items():
        path = folder / name
        try:
            if path.stat().st_size != want.get("size"):
                continue
            if bool(want.get("executable")) and not os.access(path, os.X_OK):
                continue
            if file_sha256(path) == want.get("sha256"):
                good.append(name)
        except OSError:
            continue
    return good


def problems(folder: Path) -> list[str]:
    """What is wrong with the entry `folder`: nothing when every file its manifest names is
    there with the recorded size, mode and checksum."""
    manifest = _manifest(folder)
    if manifest is None:
        return [f"{folder}: no manifest" if folder.exists() else f"{folder}: missing"]
    if not manifest:
        return [f"{folder}: empty manifest"]
    good = set(good_files(folder))
    return [f"{folder / name}: missing or changed" for name in sorted(manifest) if name not in good]


def _say_waiting(path: Path) -> None:
    print(f"[cache] another process holds {path}; waiting for it", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(
    path: Path,
    *,
    timeout: float = _LOCK_TIMEOUT,
    waiting: Callable[[Path], None] = _say_waiting,
) -> Iterator[None]:
    """An exclusive flock on `path` (made if missing); when another process holds it, calls
    `waiting` and waits up to `timeout` seconds, then CacheError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting(path)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CacheError(f"{path} still held after {timeout:g}s") from None
                    time.sleep(0.2)
        yield


def mark_used(folder: Path) -> None:
    """Marks the entry used now (its manifest's mtime), so pruning spares it."""
    with contextlib.suppress(OSError):
        os.utime(folder / MANIFEST)


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def ensure(folder: Path, build: Callable[[Path], None]) -> bool:
    """Makes `folder` a verified entry, building it with `build(scratch)` unless it is one
    already: True when it was built. Files of a damaged entry that still match its manifest are
    copied into the scratch folder first, so `build` redoes only what is missing there."""
    if not problems(folder):
        mark_used(folder)
        return False
    with locked(_lock_path(folder)):
        return _ensure_locked(folder, build)


def _ensure_locked(folder: Path, build: Callable[[Path], None]) -> bool:
    """`ensure`'s part under the entry's lock, which the caller holds."""
    if not problems(folder):  # another process built it while this one waited
        mark_used(folder)
        return False
    # What a build killed before its cleanup left (under this lock, no one else builds it).
    for left in folder.parent.glob(f".{folder.name}.*.partial"):
        shutil.rmtree(left, ignore_errors=True)
    scratch = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    scratch.mkdir(parents=True)
    try:
        for name in good_files(folder):
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, scratch / name)
        build(scratch)
        if not _files(scratch):
            raise CacheError(f"building {folder.name} made no file")
        seal(scratch)
        stale = folder.with_name(f".{folder.name}.{os.getpid()}.stale")
        if folder.exists():
            folder.rename(stale)
        scratch.rename(folder)
        shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def _addon_build(kind: str, root: Path) -> Callable[[Path], None]:
    """The command that builds `kind`'s entry into a scratch folder (given last)."""
    if kind == "thanos":
        return _build_command(
            [str(root / "tests" / "cluster" / "thanos" / "build"), "--build-into"]
        )
    return _build_command(["bash", str(root / "tests" / "cluster" / kind / "build")])


def ensure_addon(kind: str, *, root: Path | None = None) -> Path:
    """The verified entry of a controller kind ("keda", "argo-rollouts"), built first by
    tests/cluster/<kind>/build unless it is there; CacheError when the build fails."""
    if kind not in _ADDON_VERSIONS:
        raise CacheError(f"{kind!r} is not built by a script of its own")
    root = root if root is not None else _repo_root()
    folder = entry(kind, root=root)
    ensure(folder, _addon_build(kind, root))
    return folder


BACKGROUND_KINDS = ("thanos", "argo-rollouts", "keda")
"""The entries built by scripts of their own, in the order `build_in_background` builds them:
only some tests need them, the sandbox none."""


def build_in_background(
    kinds: Iterable[str], log_path: Path, *, root: Path | None = None
) -> list[str]:
    """Builds the entries of `kinds` that are missing, one after the other, in a detached process
    writing to `log_path`; returns the kinds it builds. Their locks are taken here, before this
    returns, and each is held until its entry is in place: whoever needs one meanwhile (a test's
    `ensure`) waits for it instead of building it a second time. A kind another process is
    building already is left to it."""
    root = root if root is not None else _repo_root()
    held: list[tuple[str, Path, Any]] = []
    for kind in kinds:
        folder = entry(kind, root=root)
        if not problems(folder):
            continue
        lock = _lock_path(folder)
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        held.append((kind, folder, handle))
    if not held:
        return []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if os.fork() == 0:  # the builder: a session of its own, so the terminal's signals spare it
        code = 1
        try:
            os.setsid()
            out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            keep = {0, 1, 2, *(handle.fileno() for *_, handle in held)}
            for fd in map(int, os.listdir("/proc/self/fd")):  # whatever the caller's pipes were
                if fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            code = 0
            for kind, folder, handle in held:
                start = time.monotonic()
                try:
                    _ensure_locked(folder, _addon_build(kind, root))
                    print(f"[cache] built {kind} in {time.monotonic() - start:.0f} s: {folder}")
                except (CacheError, OSError) as exc:
                    print(f"[cache] building {kind} failed: {exc}")
                    code = 1
                finally:
                    sys.stdout.flush()
                    handle.close()
        finally:
            os._exit(code)
    for *_, handle in held:
        handle.close()  # the builder holds the same locks until it closes its copies
    return [kind for kind, *_ in held]


def prune(parent: Path, pattern: str, *, keep: int, unused_for: float) -> None:
    """Removes the entries matching `pattern` beyond the `keep` most recently used, unless used
    within `unused_for` seconds: another checkout sharing the cache may be about to use one."""

    def used(path: Path) -> float:
        try:
            return (path / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    found = sorted((p for p in parent.glob(pattern) if p.is_dir()), key=used, reverse=True)
    unused_since = time.time() - unused_for
    for old in found[keep:]:
        if used(old) < unused_since:
            with locked(old.with_name(old.name + ".lock")):
                shutil.rmtree(old, ignore_errors=True)
            old.with_name(old.name + ".lock").unlink(missing_ok=True)


# -- tests/cluster/build's side -----------------------------------------------------------------


def _build_command(argv: list[str]) -> Callable[[Path], None]:
    def build(scratch: Path) -> None:
        done = subprocess.run([*argv, str(scratch)], check=False)
        if done.returncode != 0:
            raise CacheError(f"{' '.join(argv)} {scratch} exited {done.returncode}")

    return build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rainbowd_sandbox.buildcache",
        description="rainbowd's per-user build cache (see README, Development).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("root", help="print the cache folder")
    path = sub.add_parser("entry", help="print the entry of a kind tests/cluster/build fills")
    path.add_argument("kind", choices=KINDS)
    check = sub.add_parser("verify", help="exit 0 if FOLDER is a verified entry")
    check.add_argument("folder", type=Path)
    make = sub.add_parser(
        "ensure", help="build FOLDER with COMMAND... SCRATCH unless verified; then verify it"
    )
    make.add_argument("folder", type=Path)
    make.add_argument("build", nargs=argparse.REMAINDER)
    later = sub.add_parser(
        "background",
        help="build the missing entries of KIND... one after the other in a detached process",
    )
    later.add_argument("kinds", nargs="+", choices=BACKGROUND_KINDS, metavar="KIND")
    later.add_argument("--log", type=Path, required=True)
    trim = sub.add_parser(
        "prune", help="remove FOLDER's siblings like it but the KEEP most recently used"
    )
    trim.add_argument("folder", type=Path)
    trim.add_argument("--keep", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        if args.command == "root":
            print(cache_root())
        elif args.command == "entry":
            print(entry(args.kind))
        elif args.command == "verify":
            found = problems(args.folder)
            for problem in found:
                print(problem, file=sys.stderr)
            return 1 if found else 0
        elif args.command == "background":
            print(" ".join(build_in_background(args.kinds, args.log)))
        elif args.command == "prune":
            # Entries of one kind and version differ in their key, after the last "-".
            stem = args.folder.name.rsplit("-", 1)[0]
            prune(args.folder.parent, f"{stem}-*", keep=args.keep, unused_for=_PRUNE_UNUSED_FOR)
        else:
            command = [a for a in args.build if a != "--"]
            if not command:
                parser.error("ensure needs a build command")
            ensure(args.folder, _build_command(command))
    except (CacheError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
