"""Kubernetes Events (events.k8s.io/v1) about the objects rainbowd acts on.

`EventRecorder.emit()` writes one Event regarding a Deployment or the policy ConfigMap. An Event
is a courtesy to whoever runs `kubectl describe`: it never raises and never waits long.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import KubeError, request_json, resource_path
from rainbowd.logs import get_logger

log = get_logger(__name__)

REPORTING_CONTROLLER = "rainbowd.io/rainbowd"
# The apiserver rejects a note longer than 1024 bytes (not characters).
NOTE_LIMIT = 1024
# reportingInstance, action and reason are each limited to 128 characters by validation.
FIELD_LIMIT = 128
# Object names are DNS subdomains of at most 253 characters; the suffix is "." + 16 hex digits.
_NAME_LIMIT = 253
_SUFFIX_HEX = 16

EventType = Literal["Normal", "Warning"]


def cut_note(note: str, limit: int = NOTE_LIMIT) -> str:
    """`note` cut to at most `limit` UTF-8 bytes without splitting a character."""
    data = note.encode("utf-8")
    if len(data) <= limit:
        return note
    ellipsis = "..."
    return data[: limit - len(ellipsis)].decode("utf-8", errors="ignore") + ellipsis


def micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fraction digits.

    The client's own datetime serialization drops the fraction when it is zero, which the
    apiserver's MicroTime parser then rejects.
    """
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(object_name: str) -> str:
    """A fresh Event name `<object-name>.<hex>`, short enough to be a valid object name."""
    prefix = object_name[: _NAME_LIMIT - _SUFFIX_HEX - 1].rstrip(".-")
    return f"{prefix}.{secrets.token_hex(_SUFFIX_HEX // 2)}"


class EventRecorder:
    """Writes Events on behalf of one rainbowd process (`instance`: its pod or host name)."""

    def __init__(
        self,
        api: ApiClient,
        *,
        component: str = "rainbowd",
        instance: str,
        timeout: float = 5.0,
    ) -> None:
        """`timeout` (seconds) bounds one emit: an Event is not worth stalling a cycle for."""
        self._api = api
        self.component = component
        self.instance = instance[:FIELD_LIMIT]
        self.timeout = timeout

    def body(
        self,
        *,
        kind: str,
        api_version: str,
        namespace: str,
        name: str,
        uid: str,
        type: EventType,
        reason: str,
        note: str,
        action: str,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """The Event as JSON, exposed so callers and tests can see exactly what is sent."""
        when = now if now is not None else datetime.now(UTC)
        regarding: dict[str, Any] = {
            "kind": kind,
            "apiVersion": api_version,
            "namespace": namespace,
            "name": name,
        }
        if uid:
            regarding["uid"] = uid
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": event_name(name),
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": self.component},
            },
            "eventTime": micro_time(when),
            "type": type,
            "reason": reason[:FIELD_LIMIT],
            "action": action[:FIELD_LIMIT],
            "note": cut_note(note),
            "regarding": regarding,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
        }

    async def emit(
        self,
        *,
        kind: str,
        api_version: str,
        namespace: str,
        name: str,
        uid: str,
        type: EventType,
        reason: str,
        note: str,
        action: str,
    ) -> None:
        """Write one Event regarding the object; failures and timeouts are logged, not raised."""
        body = self.body(
            kind=kind,
            api_version=api_version,
            namespace=namespace,
            name=name,
            uid=uid,
            type=type,
            reason=reason,
            note=note,
            action=action,
        )
        fields: dict[str, Any] = {
            "namespace": namespace,
            "kind": kind,
            "object": name,
            "reason": reason,
            "type": type,
        }
        try:
            async with asyncio.timeout(self.timeout):
                await request_json(
                    self._api,
                    "POST",
                    resource_path("events.k8s.io/v1", "events", namespace=namespace),
                    body=body,
                )
        except TimeoutError:
            log.warning("event not recorded", error="timed out", timeout=self.timeout, **fields)
        except KubeError as exc:
            log.warning("event not recorded", error=str(exc), status=exc.status, **fields)
        except Exception as exc:  # an Event must never break the caller
            log.warning("event not recorded", error=repr(exc)[:300], **fields)
