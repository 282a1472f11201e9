"""Container images without a registry or a Docker engine: a Debian base made by mmdebstrap, the
project's Dockerfile built on it by buildah, and the pod-sandbox (pause) image, each written as an
OCI archive a container runtime imports. Archives are entries of the per-user build cache
(rainbowd_sandbox.buildcache) keyed by their inputs and checked against their checksums.

`python -m rainbowd_sandbox.images` (`make image`) builds what is missing and prints the archives.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainbowd import __version__
from rainbowd.logs import get_logger, setup_logging
from rainbowd_sandbox import buildcache

log = get_logger(__name__)

CACHE_ENV = "RAINBOWD_IMAGE_CACHE"
IMAGE = f"localhost/rainbowd:{__version__}"
PAUSE_IMAGE = "localhost/rainbowd-pause:1"
BASE_IMAGE = "localhost/rainbowd-base"
DEBIAN_SUITE = "bookworm"
# The Debian counterpart of the public python image the Dockerfile defaults to: Python 3.11, pip,
# `python` on PATH and the CA bundle.
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
# Debian marks its Python as managed by apt (PEP 668); in an image, pip owns it, as in python:*.
_BASE_HOOK = 'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
# What `COPY` in the Dockerfile reads: these and nothing else decide the image.
_IMAGE_INPUTS = ("Dockerfile", "pyproject.toml", "README.md", "rainbowd", "demo_app")
_IGNORED = ("__pycache__", ".pyc", ".mypy_cache", ".ruff_cache", ".egg-info")
# The build's pip reaches PyPI through this machine's trust store, mounted for the build only.
_HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_BUILD_TIMEOUT = 1800.0
_KEPT_ARCHIVES = 4
_PRUNE_UNUSED_FOR = 3600.0
"""Seconds: an archive used more recently than this is never pruned (another checkout sharing the
cache may be about to import it into its node)."""
ARCHIVE = "image.oci.tar"
"""The file of an image's cache entry."""
ROOTFS = "rootfs.tar"
"""The file of the Debian base's cache entry."""


class ImageError(RuntimeError):
    """An image cannot be built: a tool is missing or failed; the message has its output."""


@dataclass(frozen=True)
class Image:
    """One image: its name and the OCI archive holding it."""

    ref: str
    archive: Path


@dataclass
class Images:
    """The images a node runs, and what building them took (seconds, 0 when cached)."""

    rainbowd: Image
    pause: Image
    timings: dict[str, float] = field(default_factory=dict)

    def all(self) -> tuple[Image, ...]:
        return (self.pause, self.rainbowd)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """$RAINBOWD_IMAGE_CACHE, else images/ in the per-user build cache."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else buildcache.cache_root() / "images"


def _tool_version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"{tool} is not installed; run scripts/setup (Debian package {tool})")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def _input_files(root: Path, names: Sequence[str]) -> Iterator[Path]:
    for name in names:
        path = root / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and not any(part in str(found) for part in _IGNORED):
                yield found


def base_key() -> str:
    """What decides the base image: the suite, the packages, the hook and mmdebstrap itself."""
    recipe = json.dumps(
        [DEBIAN_SUITE, BASE_PACKAGES, _BASE_HOOK, _tool_version("mmdebstrap")], sort_keys=True
    )
    return buildcache.digest([recipe.encode()])[:16]


def image_key(root: Path, base: str) -> str:
    """What decides rainbowd's image: the base and every file the Dockerfile copies."""
    parts = [base.encode(), _tool_version("buildah").encode()]
    for path in _input_files(root, _IMAGE_INPUTS):
        parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return buildcache.digest(parts)[:16]


def _run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    log.debug("running", argv=" ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=_BUILD_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: {exc.filename} is not installed; run scripts/setup") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: no result after {_BUILD_TIMEOUT:g}s: {' '.join(argv)}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{tail}")
    return done.stdout


def _private_mounts(argv: Sequence[str]) -> list[str]:
    """`argv` in a mount namespace of its own, with a scratch tmpfs over /var/lib.

    mmdebstrap mounts /proc and /dev into its chroot; buildah keeps a blob-info cache in
    /var/lib/containers that no flag moves. In a private namespace, both vanish with the command.
    """
    script = 'mount -t tmpfs -o size=64m,mode=0755 rainbowd-image /var/lib && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


# -- the Debian base --------------------------------------------------------------------------


def build_base_rootfs(cache: Path) -> tuple[Path, str, bool]:
    """The base rootfs as a tarball, made by mmdebstrap unless cached: (path, key, built)."""
    key = base_key()
    folder = cache / f"base-{key}"

    def build(scratch: Path) -> None:
        log.info("building the Debian base with mmdebstrap", suite=DEBIAN_SUITE, key=key)
        # Root mode (the chroot's /proc and /dev are mounted) inside a private mount namespace,
        # so nothing is left mounted even if the build is killed.
        _run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "mmdebstrap",
                "--quiet",
                "--mode=root",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                f"--customize-hook={_BASE_HOOK}",
                DEBIAN_SUITE,
                str(scratch / ROOTFS),
            ],
            what="mmdebstrap",
        )

    built = buildcache.ensure(folder, build)
    return folder / ROOTFS, key, built


# -- buildah ----------------------------------------------------------------------------------


class _Buildah:
    """buildah with its storage, run state and temporary files in one private folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, what: str) -> str:
        argv = [
            "buildah",
            f"--root={self.workdir / 'storage'}",
            f"--runroot={self.workdir / 'run'}",
            # vfs: plain folders, no overlay mounts to leave behind.
            "--storage-driver=vfs",
            *args,
        ]
        return _run(_private_mounts(argv), what=what, env=self.env).strip()


def build_rainbowd_image(
    cache: Path, *, root: Path | None = None
) -> tuple[Image, dict[str, float]]:
    """rainbowd's image from the project's Dockerfile on the Debian base, as an OCI archive."""
    root = root if root is not None else _repo_root()
    timings: dict[str, float] = {}
    began = time.monotonic()
    base_tar, bkey, built = build_base_rootfs(cache)
    timings["base rootfs (mmdebstrap)"] = time.monotonic() - began if built else 0.0
    key = image_key(root, bkey)
    folder = cache / f"rainbowd-{key}"
    began = time.monotonic()

    def build(entry: Path) -> None:
        log.info("building rainbowd's image with buildah", key=key, base=bkey)
        _buildah_image(root, base_tar, bkey, entry / ARCHIVE, workdir=cache)

    built = buildcache.ensure(folder, build)
    timings["rainbowd image (buildah)"] = time.monotonic() - began if built else 0.0
    if built:
        buildcache.prune(cache, "rainbowd-*", keep=_KEPT_ARCHIVES, unused_for=_PRUNE_UNUSED_FOR)
    return Image(IMAGE, folder / ARCHIVE), timings


def _buildah_image(root: Path, base_tar: Path, bkey: str, archive: Path, *, workdir: Path) -> None:
    """The Dockerfile of `root` built on the base rootfs, written to `archive`."""
    workdir = Path(tempfile.mkdtemp(prefix=".buildah-", dir=workdir))
    scratch = workdir / "image.oci.tar"
    try:
        buildah = _Buildah(workdir)
        base_ref = f"{BASE_IMAGE}:{bkey}"
        container = buildah("from", "scratch", what="buildah from scratch")
        buildah("add", container, str(base_tar), "/", what="buildah add (the base rootfs)")
        buildah(
            "config",
            "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env=LANG=C.UTF-8",
            "--cmd=python3",
            container,
            what="buildah config",
        )
        buildah("commit", "--quiet", "--rm", container, base_ref, what="buildah commit (base)")
        pip_conf = workdir / "pip.conf"
        volumes: list[str] = []
        if _HOST_CA_BUNDLE.exists():
            pip_conf.write_text("[global]\ncert = /run/rainbowd-build/ca.crt\n")
            volumes = [
                f"--volume={_HOST_CA_BUNDLE}:/run/rainbowd-build/ca.crt:ro",
                f"--volume={pip_conf}:/etc/pip.conf:ro",
            ]
        buildah(
            "bud",
            "--pull=never",
            "--runtime=runc",
            "--network=host",
            "--layers=false",
            # No CAP_SYS_RESOURCE needed: keep the build's limits within this process's own.
            "--ulimit=nofile=1024:1024",
            f"--build-arg=BASE={base_ref}",
            *volumes,
            f"--tag={IMAGE}",
            f"--file={root / 'Dockerfile'}",
            str(root),
            what="buildah bud (Dockerfile)",
        )
        # Uncompressed layers: a node imports them faster than it would gunzip them.
        buildah(
            "push",
            "--quiet",
            "--disable-compression",
            IMAGE,
            f"oci-archive:{scratch}:{IMAGE}",
            what="buildah push",
        )
        scratch.replace(archive)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the pause image, written by hand ---------------------------------------------------------


def _tar_bytes(members: Sequence[tuple[str, bytes, int]]) -> bytes:
    """A reproducible tarball: fixed owner and times, so equal inputs give equal digests."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_oci_archive(
    path: Path, ref: str, files: Sequence[tuple[str, bytes, int]], config: Mapping[str, Any]
) -> None:
    """An OCI image archive (layout tarred) of one layer holding `files`, named `ref`."""
    layer = _tar_bytes(files)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": dict(config),
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(image_config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(image_config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    blobs = [(image_config, config_digest), (layer, layer_digest), (manifest, manifest_digest)]
    members = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644),
        ("index.json", index, 0o644),
        *((f"blobs/sha256/{d.removeprefix('sha256:')}", blob, 0o644) for blob, d in blobs),
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(_tar_bytes(members))
    tmp.replace(path)


def build_pause_image(cache: Path, pause_binary: Path) -> tuple[Image, bool]:
    """The pod-sandbox image: the static `pause` program (tests/cluster/build) and nothing else."""
    try:
        binary = pause_binary.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{pause_binary} is missing; build it with: tests/cluster/build") from None
    folder = cache / f"pause-{buildcache.digest([binary])[:16]}"

    def build(entry: Path) -> None:
        write_oci_archive(
            entry / ARCHIVE,
            PAUSE_IMAGE,
            [("pause", binary, 0o755)],
            {"Entrypoint": ["/pause"], "User": "65535:65535"},
        )

    built = buildcache.ensure(folder, build)
    return Image(PAUSE_IMAGE, folder / ARCHIVE), built


def build_images(*, cache: Path | None = None, pause_binary: Path | None = None) -> Images:
    """Every image a node needs, each built only when its archive is not cached yet."""
    from rainbowd_sandbox.controlplane import default_binaries_dir

    cache = cache if cache is not None else default_cache_dir()
    began = time.monotonic()
    pause, built = build_pause_image(cache, pause_binary or default_binaries_dir() / "pause")
    timings = {"pause image": time.monotonic() - began if built else 0.0}
    rainbowd, more = build_rainbowd_image(cache)
    timings.update(more)
    return Images(rainbowd=rainbowd, pause=pause, timings=timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rainbowd_sandbox.images",
        description=(
            "Build rainbowd's image (the Dockerfile on a Debian base made by mmdebstrap, with "
            "buildah) and the node's pause image as OCI archives, without a registry; cached."
        ),
    )
    parser.add_argument(
        "--cache", type=Path, help="archives folder (default: images/ in the build cache)"
    )
    args = parser.parse_args(argv)
    setup_logging("INFO", "text")
    try:
        images = build_images(cache=args.cache)
    except ImageError as exc:
        print(f"error: {exc}")
        return 1
    for image in images.all():
        print(f"{image.ref}  {image.archive}")
    for what, seconds in images.timings.items():
        print(f"{what}: {'cached' if seconds == 0 else f'{seconds:.1f}s'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
