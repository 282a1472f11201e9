"""Leader election on a coordination.k8s.io/v1 Lease, so only one replica acts at a time.

`LeaderElector.run()` campaigns until it holds the Lease, renews it, and returns as soon as it
cannot renew within the renew deadline; `release()` hands the Lease over on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import (
    Conflict,
    KubeError,
    NotFound,
    request_json,
    resource_path,
)
from rainbowd.logs import get_logger

log = get_logger(__name__)

LEASES = ("coordination.k8s.io/v1", "leases")


def micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One replica's campaign for the Lease `namespace/name` under `identity`.

    Expiry is judged on the local monotonic clock from when this replica last saw the Lease
    record change, never by comparing the holder's renewTime with the local wall clock: replicas'
    clocks may disagree, and a record that stops changing for a lease duration is expired
    whatever its timestamps say.
    """

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "expected 0 < retry_period < renew_deadline < lease_duration, got "
                f"{retry_period} / {renew_deadline} / {lease_duration}"
            )
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_lost = on_lost
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self._is_leader = False
        self._released = False
        self._usurped = False
        self._lock = asyncio.Lock()
        # The last Lease record seen and when (monotonic) it was first seen in that state.
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self._path = resource_path(*LEASES, namespace=namespace)
        self._item_path = resource_path(*LEASES, namespace=namespace, name=name)

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Campaign, then renew; returns when leadership is lost or released."""
        if not await self._campaign():
            return
        await self._renew()

    async def _campaign(self) -> bool:
        log.info("campaigning", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        while not self._released:
            if await self._attempt(within=self.renew_deadline):
                self._is_leader = True
                self.leading.set()
                log.info("leading", lease=f"{self.namespace}/{self.name}", identity=self.identity)
                return True
            # Jitter keeps replicas that started together from colliding every period.
            await asyncio.sleep(self.retry_period * random.uniform(1.0, 1.2))
        return False

    async def _renew(self) -> None:
        last_renew = self._now()
        while True:
            remaining = last_renew + self.renew_deadline - self._now()
            await asyncio.sleep(min(self.retry_period, max(0.0, remaining)))
            if self._released:
                return
            remaining = last_renew + self.renew_deadline - self._now()
            if remaining > 0 and await self._attempt(within=remaining):
                last_renew = self._now()
                continue
            if self._released:
                return
            # Another holder means our record expired in someone's eyes: stop acting now
            # rather than at the deadline.
            if self._usurped or self._now() >= last_renew + self.renew_deadline:
                self._lose()
                return

    def _lose(self) -> None:
        self._is_leader = False
        self.leading.clear()
        self.lost.set()
        log.warning(
            "leadership lost",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
            renew_deadline=self.renew_deadline,
        )
        if self.on_lost is not None:
            try:
                self.on_lost()
            except Exception:
                log.error("on_lost callback failed", exc_info=True)

    async def _attempt(self, *, within: float) -> bool:
        """One try to acquire or renew, bounded by `within` seconds; errors count as failure."""
        try:
            async with self._lock, asyncio.timeout(within):
                if self._released:
                    return False
                return await self._try_acquire_or_renew()
        except TimeoutError:
            log.warning("lease request timed out", lease=f"{self.namespace}/{self.name}")
        except Conflict:
            # Someone else wrote the Lease between our read and our write.
            log.debug("lease write conflict", lease=f"{self.namespace}/{self.name}")
        except KubeError as exc:
            log.warning(
                "lease request failed",
                lease=f"{self.namespace}/{self.name}",
                error=str(exc),
                status=exc.status,
            )
        return False

    async def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await request_json(self.api, "GET", self._item_path)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquire=now, transitions=0),
            }
            created = await request_json(self.api, "POST", self._path, body=body)
            self._observe(created)
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        self._observe(lease)
        if holder and holder != self.identity and not self._expired(spec):
            self._usurped = self._is_leader
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquire = spec.get("acquireTime") or micro_time(now)
            new_spec = self._spec(now, acquire=acquire, transitions=transitions)
        else:
            new_spec = self._spec(now, acquire=now, transitions=transitions + 1)
            log.info(
                "taking over lease",
                lease=f"{self.namespace}/{self.name}",
                previous_holder=holder or "(released)",
            )
        # The metadata (with its resourceVersion) goes back as read: the PUT fails with 409
        # if anyone wrote the Lease since the GET.
        body = {**lease, "spec": {**spec, **new_spec}}
        written = await request_json(self.api, "PUT", self._item_path, body=body)
        self._observe(written)
        return True

    def _spec(self, now: datetime, *, acquire: datetime | str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.lease_duration),
            "acquireTime": acquire if isinstance(acquire, str) else micro_time(acquire),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: Mapping[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            str(spec.get("leaseDurationSeconds") or ""),
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = self._now()

    def _expired(self, spec: Mapping[str, Any]) -> bool:
        duration = spec.get("leaseDurationSeconds")
        seconds = duration if isinstance(duration, int) and duration > 0 else self.lease_duration
        return self._now() >= self._observed_at + seconds

    async def release(self) -> bool:
        """Give the Lease up if this replica still holds it; True when it was released.

        Stops the renew loop first. Another replica's campaign sees an empty holder at its next
        retry and takes over without waiting for the lease to expire.
        """
        self._released = True
        was_leader = self._is_leader
        self._is_leader = False
        self.leading.clear()
        if not was_leader:
            return False
        try:
            async with self._lock, asyncio.timeout(self.renew_deadline):
                lease = await request_json(self.api, "GET", self._item_path)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return False
                now = micro_time(datetime.now(UTC))
                released_spec = {
                    **spec,
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                }
                await request_json(
                    self.api, "PUT", self._item_path, body={**lease, "spec": released_spec}
                )
        except (KubeError, TimeoutError) as exc:
            log.warning(
                "lease release failed", lease=f"{self.namespace}/{self.name}", error=str(exc)
            )
            return False
        log.info("lease released", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        return True
