"""The knob table (`KNOBS`) is the one list of knobs: every view of the knobs (parsing, the
effective-policy document, check-policy's rows, the test strategies) follows it, and every
example policy sets every knob. A knob missing from any of them fails here."""

from __future__ import annotations

import dataclasses
import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd.commands.check_policy import render
from rainbowd.core.policy import (
    KNOB_KEYS,
    KNOBS,
    Budget,
    CleanupAction,
    Consolidate,
    Knobs,
    PolicyError,
    StepDown,
    parse_policy,
    policy_to_document,
)
from rainbowd.policyfile import load_policy_file
from tests.unit.strategies import KNOB_CHOICES, Choices, knobs_from

REPO = Path(__file__).parents[2]
FULL = REPO / "tests" / "unit" / "policies" / "valid" / "full.yaml"
HEADER = {"apiVersion": "rainbowd.io/v1alpha1", "kind": "DrainPolicy"}


def test_the_table_has_every_field_of_knobs_in_order_once() -> None:
    assert [knob.field for knob in KNOBS] == [f.name for f in dataclasses.fields(Knobs)]
    assert len(set(KNOB_KEYS)) == len(KNOB_KEYS)
    for knob in KNOBS:
        # The key is the field in camelCase: what users write is what the code calls it.
        assert re.sub(r"_(\w)", lambda m: m.group(1).upper(), knob.field) == knob.key


def test_a_nullable_knob_says_what_null_means_and_only_those_accept_null() -> None:
    for knob in KNOBS:
        document = {**HEADER, "defaults": {knob.key: None}}
        if knob.null is None:
            with pytest.raises(PolicyError, match=rf"^defaults\.{knob.key}\b"):
                parse_policy(document)
        else:
            assert getattr(parse_policy(document).defaults, knob.field) is None
            none: dict[str, Any] = {knob.field: None}
            assert knob.text(dataclasses.replace(Knobs(), **none)) == knob.null


def _knobs_set(document: dict[str, Any]) -> list[set[str]]:
    """The knob keys set by `defaults:` and by each rule of a policy document."""
    sections = [document.get("defaults") or {}, *(document.get("rules") or [])]
    return [set(section) & set(KNOB_KEYS) for section in sections]


def test_full_yaml_sets_every_knob_in_defaults_and_in_its_rule() -> None:
    document = yaml.safe_load(FULL.read_text(encoding="utf-8"))
    assert _knobs_set(document) == [set(KNOB_KEYS), set(KNOB_KEYS)]
    # ...each to something other than its built-in default, in defaults, so parsing is proven.
    policy = load_policy_file(FULL)
    for knob in KNOBS:
        assert getattr(policy.defaults, knob.field) != getattr(Knobs(), knob.field), knob.key


def test_the_example_policy_documents_every_knob() -> None:
    document = yaml.safe_load((REPO / "config" / "policy.yaml").read_text(encoding="utf-8"))
    assert set(document["defaults"]) == set(KNOB_KEYS)


def test_the_shipped_configmap_sets_every_knob() -> None:
    # The chart's default policy is written from it (scripts/sync_manifests.py; its check is in
    # tests/unit/test_install_files.py).
    configmap = yaml.safe_load((REPO / "k8s/base/policy-configmap.yaml").read_text("utf-8"))
    document = yaml.safe_load(configmap["data"]["policy.yaml"])
    assert set(document["defaults"]) == set(KNOB_KEYS)


def test_the_design_docs_example_policy_shows_every_knob() -> None:
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(apiVersion: rainbowd.io/v1alpha1\n.*?)```", text, re.S)
    assert match, "docs/design.md has no example DrainPolicy"
    document = yaml.safe_load(match.group(1))
    assert set(document["defaults"]) == set(KNOB_KEYS)
    parse_policy(document)


def test_the_effective_document_writes_every_knob_and_reads_back_equal() -> None:
    policy = load_policy_file(FULL)
    document = policy_to_document(policy)
    assert list(document["defaults"]) == list(KNOB_KEYS)  # type: ignore[call-overload]
    for rule in document["rules"]:  # type: ignore[attr-defined]
        assert [key for key in rule if key in KNOB_KEYS] == list(KNOB_KEYS)
    assert parse_policy(document) == policy


def test_check_policy_shows_a_row_for_every_knob_in_table_order() -> None:
    out = io.StringIO()
    render(load_policy_file(FULL), source="full.yaml", out=out)
    (rule,) = out.getvalue().split("\nrule ")[1:]
    keys = [line.split(":")[0].strip() for line in rule.splitlines()[5:]]
    assert keys == list(KNOB_KEYS)


@pytest.mark.parametrize(
    ("knobs", "texts"),
    [
        (
            Knobs(),
            {
                "minRetiredAge": "30m",
                "maxColors": "4",
                "action": "scale-then-delete",
                "maxDisruptions": "1 per 10m",
                "abandonedAfter": "never",
                "consolidate": "never",
            },
        ),
        (
            Knobs(
                max_colors=None,
                max_retired_age=None,
                action=CleanupAction.DELETE,
                max_disruptions=Budget(3, timedelta(hours=1)),
                abandoned_after=timedelta(seconds=90),
                consolidate=Consolidate(),
                step_down=StepDown(),
            ),
            {
                "maxColors": "no cap",
                "maxRetiredAge": "never",
                "action": "delete",
                "maxDisruptions": "3 per 1h",
                "abandonedAfter": "1m30s",
                "consolidate": "after 30m, every 5m, keepPods 1",
                "stepDown": "every 1h, maxPods 1",
            },
        ),
    ],
)
def test_each_kind_of_value_is_shown_as_people_write_it(
    knobs: Knobs, texts: dict[str, str]
) -> None:
    shown = {knob.key: knob.text(knobs) for knob in KNOBS}
    assert {key: shown[key] for key in texts} == texts


def test_the_strategies_choose_every_knob() -> None:
    assert list(KNOB_CHOICES) == list(KNOB_KEYS)
    assert isinstance(knobs_from(Choices(12345)), Knobs)
