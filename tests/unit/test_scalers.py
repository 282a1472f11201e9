"""What scales a color: HPAs, ScaledObjects and PDBs read from their JSON, matched to a color,
and the bounds a consolidation step gives an HPA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rainbowd.core.model import (
    HPA_BOUNDS,
    KEDA_PAUSED_REPLICAS,
    ColorObject,
    Deployment,
    ObjectKind,
)
from rainbowd.core.objects import ObjectError, color_object_from_k8s
from rainbowd.core.policy import ConnectionsQuery
from rainbowd.core.scalers import (
    Bounds,
    consolidation_problem,
    hpa_of,
    lowered,
    objects_of,
    parse_bounds,
    scaled_objects_to_pause,
)
from rainbowd.daemon.consolidating import refused_by_scalers
from tests.unit import strategies

COLOR = Deployment(
    namespace="chat",
    name="chat-c0c0c0",
    uid="u",
    resource_version="1",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    labels={"app": "chat"},
    template_labels={"app": "chat", "color": "c0c0c0", "tier": "web"},
    annotations={},
    replicas=4,
)


def hpa(name: str = "chat-c0c0c0", target: str = "chat-c0c0c0", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "chat",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "annotations": {"unrelated": "x", HPA_BOUNDS: "{}"} if spec.pop("record", 0) else {},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "maxReplicas": 6,
            **spec,
        },
    }


def test_an_hpa_is_read_with_its_target_and_bounds_and_only_its_own_annotations() -> None:
    found = color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=4, record=1))
    assert found.target == "chat-c0c0c0"
    assert (found.min_replicas, found.max_replicas) == (4, 6)
    assert found.annotations == {HPA_BOUNDS: "{}"}
    # minReplicas defaults to 1, as the API does.
    assert color_object_from_k8s(ObjectKind.HPA, hpa()).min_replicas == 1


def test_an_hpa_of_another_kind_of_target_scales_no_deployment() -> None:
    raw = hpa()
    raw["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "x"}
    assert color_object_from_k8s(ObjectKind.HPA, raw).target == ""


def test_a_malformed_object_is_an_error_naming_the_field() -> None:
    raw = hpa()
    del raw["spec"]["scaleTargetRef"]["name"]
    with pytest.raises(ObjectError, match=r"scaleTargetRef\.name"):
        color_object_from_k8s(ObjectKind.HPA, raw)


def test_a_scaled_object_defaults_its_target_kind_and_counts_as_keda_does() -> None:
    raw = {
        "metadata": {"name": "so", "namespace": "chat"},
        "spec": {"scaleTargetRef": {"name": "chat-c0c0c0"}},
    }
    found = color_object_from_k8s(ObjectKind.SCALED_OBJECT, raw)
    assert (found.target, found.min_replicas, found.max_replicas) == ("chat-c0c0c0", 0, 100)


def pdb(selector: Any) -> ColorObject:
    raw = {"metadata": {"name": "p", "namespace": "chat"}, "spec": {"selector": selector}}
    return color_object_from_k8s(ObjectKind.PDB, raw)


@pytest.mark.parametrize(
    ("selector", "selects"),
    [
        ({"matchLabels": {"app": "chat", "color": "c0c0c0"}}, True),
        ({"matchLabels": {"app": "chat", "color": "0ther0"}}, False),
        ({}, True),  # an empty selector selects every pod of the namespace
        (None, False),  # a null one none
        ({"matchExpressions": [{"key": "color", "operator": "In", "values": ["c0c0c0"]}]}, True),
        (
            {"matchExpressions": [{"key": "color", "operator": "NotIn", "values": ["c0c0c0"]}]},
            False,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
    ],
)
def test_a_pdb_selects_the_pods_its_selector_selects(selector: Any, selects: bool) -> None:
    assert (pdb(selector) in objects_of(COLOR, [pdb(selector)])) is selects


def test_consolidation_problems() -> None:
    one = color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=4))
    other = color_object_from_k8s(ObjectKind.HPA, hpa("other", minReplicas=2))
    elsewhere = color_object_from_k8s(ObjectKind.HPA, hpa("x", target="chat-0ther0"))
    assert consolidation_problem("chat", COLOR.name, [one, elsewhere]) is None
    assert hpa_of("chat", COLOR.name, [one, elsewhere]) == one
    two = consolidation_problem("chat", COLOR.name, [one, other])
    assert two is not None and "chat-c0c0c0, other all target it" in two
    assert hpa_of("chat", COLOR.name, [one, other]) is None
    bad = color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=4, record=1))
    problem = consolidation_problem("chat", COLOR.name, [bad])
    assert problem is not None and "not a record of bounds" in problem
    raw: dict[str, Any] = {"metadata": {"name": "so", "namespace": "chat"}}
    raw["spec"] = {"scaleTargetRef": {"name": COLOR.name}}
    scaled = color_object_from_k8s(ObjectKind.SCALED_OBJECT, raw)
    problem = consolidation_problem("chat", COLOR.name, [scaled])
    assert problem is not None and "KEDA ScaledObject so" in problem
    assert scaled_objects_to_pause("chat", COLOR.name, [scaled]) == [scaled]
    raw["metadata"]["annotations"] = {KEDA_PAUSED_REPLICAS: "0"}
    paused = color_object_from_k8s(ObjectKind.SCALED_OBJECT, raw)
    assert consolidation_problem("chat", COLOR.name, [paused]) is None
    assert scaled_objects_to_pause("chat", COLOR.name, [paused]) == []


def test_a_step_lowers_the_bounds_and_keeps_the_first_record() -> None:
    first = color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=4))
    bounds, record = lowered(first, before=4, replicas=2)
    assert (bounds, record) == (Bounds(2, 4), Bounds(4, 6))
    raw = hpa(minReplicas=2, maxReplicas=4)
    raw["metadata"]["annotations"] = {HPA_BOUNDS: record.record()}
    second = color_object_from_k8s(ObjectKind.HPA, raw)
    assert lowered(second, before=2, replicas=1) == (Bounds(1, 2), Bounds(4, 6))
    # A minReplicas already below the step stays where it is.
    low = color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=1))
    assert lowered(low, before=4, replicas=2)[0] == Bounds(1, 4)


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ('{"minReplicas": 4, "maxReplicas": 6}', Bounds(4, 6)),
        ("{}", None),
        ("4..6", None),
        ('{"minReplicas": 7, "maxReplicas": 6}', None),
        ('{"minReplicas": true, "maxReplicas": 6}', None),
    ],
)
def test_bounds_records(text: str, bounds: Bounds | None) -> None:
    assert parse_bounds(text) == bounds


def test_consolidation_is_unavailable_for_a_color_its_scalers_refuse() -> None:
    policy = strategies.policy()
    query = ConnectionsQuery()
    wanted = {query: {("chat", "chat", "c0c0c0"): timedelta(minutes=5)}}
    two = [
        color_object_from_k8s(ObjectKind.HPA, hpa(minReplicas=4)),
        color_object_from_k8s(ObjectKind.HPA, hpa("other")),
    ]
    refused = refused_by_scalers(policy, dict(wanted), {"chat": [COLOR]}, {"chat": two})
    why = refused["chat"][("chat", "c0c0c0")].unavailable
    assert why is not None and "all target it" in why
    # Not listed yet: unavailable too, and Prometheus is not asked for the color's pods.
    asked = {query: {("chat", "chat", "c0c0c0"): timedelta(minutes=5)}}
    why = "the horizontalpodautoscalers are not listed yet (403 Forbidden)"
    refused = refused_by_scalers(policy, asked, {"chat": [COLOR]}, None, unlisted=why)
    assert refused["chat"][("chat", "c0c0c0")].unavailable == why
    assert asked == {}
    # One HPA: the step goes through it.
    asked = {query: {("chat", "chat", "c0c0c0"): timedelta(minutes=5)}}
    assert refused_by_scalers(policy, asked, {"chat": [COLOR]}, {"chat": two[:1]}) == {}
    assert asked[query]
