"""The Kubernetes API client: configuration loading, raw JSON requests, and the error hierarchy.

Everything else in rainbowd.kube talks to the apiserver through `request_json`/`open_stream` and
sees only `KubeError` subclasses, never kubernetes_asyncio's ApiException.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_HOST_ENV_NAME,
    load_incluster_config,
)
from kubernetes_asyncio.config.kube_config import load_kube_config

from rainbowd import __version__

# Error messages carry at most this much of a response body: a Status object's message is
# short, but an HTML page from a proxy or a huge object echoed back is not worth logging whole.
BODY_EXCERPT = 300

# Requests other than watches: long enough for a 500-object LIST page on a loaded apiserver.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An error answer from the apiserver, or the apiserver could not be reached (status 0)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Conflict(KubeError):
    """409: the object changed since it was read (resourceVersion or uid precondition failed)."""


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Gone(KubeError):
    """410: the resourceVersion asked for is older than etcd keeps; list again."""


class Forbidden(KubeError):
    """403: RBAC does not allow it."""


class Unreachable(KubeError):
    """No answer at all: connection refused or reset, TLS failure, timeout."""


class ConfigError(Exception):
    """No usable cluster configuration was found."""


_BY_STATUS: dict[int, type[KubeError]] = {409: Conflict, 404: NotFound, 410: Gone, 403: Forbidden}


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "..."


def _error(status: int, reason: str, body: bytes | str | None) -> KubeError:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    detail = ""
    if body:
        # The apiserver answers errors with a Status object; its message is the useful part.
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, Mapping) and isinstance(decoded.get("message"), str):
            detail = decoded["message"]
            reason = str(decoded.get("reason") or reason)
        else:
            detail = body
    message = f"{status} {reason}".strip()
    if detail:
        message = f"{message}: {_cut(detail)}"
    return _BY_STATUS.get(status, KubeError)(message, status=status, reason=reason)


def translate(exc: ApiException) -> KubeError:
    """kubernetes_asyncio's ApiException as one of ours; raise the result `from exc`."""
    return _error(int(exc.status or 0), str(exc.reason or ""), exc.body)


def status_error(status: int, reason: str, body: bytes | str | None) -> KubeError:
    """A KubeError for an error status seen on a raw response (a watch stream's ERROR event)."""
    return _error(status, reason, body)


def _client(config: Configuration) -> ApiClient:
    api = ApiClient(configuration=config)
    # Names rainbowd in the apiserver's audit log and in request traces.
    api.user_agent = f"rainbowd/{__version__}"
    return api


async def make_api_client(*, kubeconfig: str | None, context: str | None = None) -> ApiClient:
    """An ApiClient for the kubeconfig given, else $KUBECONFIG or ~/.kube/config, else in-cluster.

    The in-cluster service account is preferred over the default kubeconfig when running in a
    pod (KUBERNETES_SERVICE_HOST set) and no kubeconfig was named explicitly.
    """
    tried: list[str] = []
    config = Configuration()
    if kubeconfig is not None:
        if not _existing([kubeconfig]):
            raise ConfigError(f"kubeconfig {kubeconfig!r} does not exist")
        await _load_file(kubeconfig, context, config)
        return _client(config)
    if os.environ.get(SERVICE_HOST_ENV_NAME):
        try:
            load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            tried.append(f"in-cluster service account ({exc})")
        else:
            return _client(config)
    else:
        tried.append(f"in-cluster service account (${SERVICE_HOST_ENV_NAME} is not set)")
    env = os.environ.get("KUBECONFIG", "")
    paths = [p for p in env.split(os.pathsep) if p] if env else ["~/.kube/config"]
    existing = _existing(paths)
    if existing:
        await _load_file(os.pathsep.join(existing), context, config)
        return _client(config)
    source = "$KUBECONFIG" if env else "default kubeconfig"
    tried.append(f"{source} {os.pathsep.join(paths)} (no such file)")
    raise ConfigError("no Kubernetes configuration found; tried: " + "; ".join(tried))


def _existing(paths: Sequence[str]) -> list[str]:
    # A stat per path, once at start-up: not worth a thread.
    return [p for p in paths if Path(p).expanduser().is_file()]


async def _load_file(path: str, context: str | None, config: Configuration) -> None:
    try:
        await load_kube_config(
            config_file=path, context=context, client_configuration=config, persist_config=False
        )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        where = f"kubeconfig {path}" + (f" context {context!r}" if context else "")
        raise ConfigError(f"{where}: {exc}") from exc


def _query(params: Mapping[str, str | int | bool | None] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return out


async def open_stream(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool | None] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    request_timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> aiohttp.ClientResponse:
    """Send a request and return the open response (2xx only); the caller must release it.

    Error statuses raise the matching KubeError; transport failures are left as aiohttp/OS
    errors so a watch loop can tell "the apiserver said no" from "the apiserver is gone".
    """
    headers = {"Accept": "application/json", "Content-Type": content_type}
    try:
        resp: aiohttp.ClientResponse = await api.call_api(
            path,
            method,
            query_params=_query(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=request_timeout,
        )
    except ApiException as exc:
        raise translate(exc) from exc
    if not 200 <= resp.status <= 299:
        data = await _read_all(resp)
        api_exc = ApiException(status=resp.status, reason=resp.reason or "")
        api_exc.body = data
        raise translate(api_exc) from api_exc
    return resp


async def _read_all(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body of `resp`, released whether or not the read succeeds."""
    try:
        return await resp.read()
    finally:
        resp.release()


async def request_json(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool | None] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    request_timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """One request, the decoded JSON answer; every failure is a KubeError."""
    try:
        resp = await open_stream(
            api,
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            request_timeout=request_timeout,
        )
        data = await _read_all(resp)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unreachable(f"{method} {path}: {type(exc).__name__}: {_cut(str(exc))}") from exc
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise KubeError(
            f"{method} {path}: answer is not JSON: {_cut(data.decode('utf-8', 'replace'))}",
            status=resp.status,
        ) from exc
    if not isinstance(decoded, dict):
        raise KubeError(f"{method} {path}: answer is not a JSON object", status=resp.status)
    return decoded


def resource_path(
    group_version: str, plural: str, *, namespace: str | None = None, name: str | None = None
) -> str:
    """`/api/v1/namespaces/ns/services/name` or `/apis/apps/v1/deployments` and the like."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    parts: Sequence[str] = [root]
    if namespace is not None:
        parts = [*parts, "namespaces", namespace]
    parts = [*parts, plural]
    if name is not None:
        parts = [*parts, name]
    return "/".join(parts)


class RateLimiter:
    """A client-side token bucket on rainbowd's writes, as client-go's QPS and Burst: `qps`
    requests a second sustained, up to `burst` at once after a quiet spell. Urgent callers
    (scale-downs, deletes, drain resets) are served before routine ones waiting at the same
    time, so bookkeeping never holds a clean-up back."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"rate limit needs qps > 0 and burst >= 1, got {qps:g}/{burst}")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._urgent_waiting = 0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for a token; urgent callers first."""
        if urgent:
            self._urgent_waiting += 1
        try:
            while True:
                self._refill()
                if self._tokens >= 1 and (urgent or not self._urgent_waiting):
                    self._tokens -= 1
                    return
                await asyncio.sleep(max((1 - self._tokens) / self.qps, 0.001))
        finally:
            if urgent:
                self._urgent_waiting -= 1
