"""The deploy commands and the planner agree on which colors are live: the same Deployments and
Service go to both, `plan()` on one side and the deploy commands' own reading on the other
(`live_colors`, and `rainbow_service`, which deploy, rollback and promote start from)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from rainbowd.core.model import Condition, Deployment, Service, State
from rainbowd.core.planner import plan
from rainbowd.deploy.common import (
    CANARY_COLOR,
    AppRef,
    AppService,
    Color,
    DeployError,
    live_colors,
    rainbow_service,
)
from tests.unit.strategies import APP, NOW, deployment, policy, service, snapshot

A, B, C = "3c3fdc", "9d2cc9", "a1b2c3"
REF = AppRef(namespace="default", app=APP)


def _colors(*extra: tuple[str, Mapping[str, str]]) -> dict[str, Deployment]:
    """A, B and C of the app, A newest; `extra`: (color, more pod-template labels)."""
    more = dict(extra)
    return {
        color: deployment(
            color, template_labels={"app": APP, "color": color, **more.get(color, {})}
        )
        for color in (C, B, A)
    }


def _planner_live(colors: Mapping[str, Deployment], svc: Service) -> set[str]:
    planned = plan(snapshot(colors.values(), [svc]), policy(), NOW)
    return {c.color for app in planned.apps for c in app.colors if c.state is State.LIVE}


CASES = [
    pytest.param(_colors(), {"app": APP, "color": A}, {A}, id="a rainbow Service"),
    pytest.param(_colors(), {"app": APP}, {A, B, C}, id="a canary Service selecting the app only"),
    pytest.param(_colors(), {"color": B}, {B}, id="a selector without the app label"),
    pytest.param(_colors(), {}, set(), id="an empty selector selects nothing"),
    pytest.param(
        _colors(), {"app": APP, "color": "dddddd"}, set(), id="a color with no Deployment"
    ),
    pytest.param(
        _colors(), {"app": APP, "color": A, "tier": "web"}, set(), id="a label the pods lack"
    ),
    pytest.param(
        _colors((A, {"tier": "web"})),
        {"app": APP, "color": A, "tier": "web"},
        {A},
        id="a label the pods have",
    ),
    pytest.param(
        _colors((B, {"tier": "web"})),
        {"app": APP, "tier": "web"},
        {B},
        id="a selector without the color label, narrowed by another label",
    ),
    pytest.param(_colors(), {"app": "another"}, set(), id="another app's Service"),
]


@pytest.mark.parametrize(("colors", "selector", "live"), CASES)
def test_the_deploy_commands_and_the_planner_agree_on_the_live_colors(
    colors: dict[str, Deployment], selector: dict[str, str], live: set[str]
) -> None:
    svc = service(selector)
    assert _planner_live(colors, svc) == live
    assert set(live_colors(svc, colors)) == live


def _app_service(selector: dict[str, str], annotations: dict[str, str]) -> AppService:
    return AppService(service(selector), annotations, resource_version="1")


def _wrapped(colors: Mapping[str, Deployment]) -> dict[str, Color]:
    return {color: Color(d, body={}) for color, d in colors.items()}


@pytest.mark.parametrize(
    ("colors", "selector", "live"),
    [case for case in CASES if "color" in case.values[1]],  # type: ignore[operator]
)
def test_the_color_a_rainbow_service_switches_away_from_is_the_planners_live_one(
    colors: dict[str, Deployment], selector: dict[str, str], live: set[str]
) -> None:
    found, canary = rainbow_service(_app_service(selector, {}), _wrapped(colors), REF)
    assert canary is None
    assert {found} - {None} == live


def test_a_canary_service_is_live_on_every_color_and_names_its_canary() -> None:
    colors = _colors()
    svc = _app_service({"app": APP}, {CANARY_COLOR: A})
    assert rainbow_service(svc, _wrapped(colors), REF) == (None, A)
    assert set(live_colors(svc.service, colors)) == _planner_live(colors, svc.service) == {A, B, C}


@pytest.mark.parametrize("selector", [{}, {"app": APP}, {"app": APP, "tier": "web"}])
def test_a_service_without_the_color_label_nor_a_canary_cannot_be_switched(
    selector: dict[str, str],
) -> None:
    with pytest.raises(DeployError, match="not a rainbow Service rainbowd can switch"):
        rainbow_service(_app_service(selector, {}), _wrapped(_colors()), REF)


@pytest.mark.parametrize(
    ("changes", "available", "rolled_out"),
    [
        ({"updated_replicas": 2}, True, True),
        # Available to the planner (a pod serves), not rolled out for a deploy: one pod is new.
        ({"updated_replicas": 1}, True, False),
        ({"updated_replicas": 2, "observed_generation": 2, "generation": 3}, True, False),
        ({"updated_replicas": 2, "ready_replicas": 1, "available_replicas": 1}, True, False),
        ({"updated_replicas": 2, "available_replicas": 0}, False, False),
    ],
)
def test_a_deploy_waits_for_more_than_the_planners_available_never_less(
    changes: dict[str, Any], available: bool, rolled_out: bool
) -> None:
    d = dataclasses.replace(deployment(A, replicas=2), **changes)
    assert (d.available, d.rolled_out) == (available, rolled_out)
    deadline = dataclasses.replace(
        d, conditions=(*d.conditions, Condition("Progressing", "False", "ProgressDeadlineExceeded"))
    )
    assert not deadline.available and not deadline.rolled_out
