"""Policy parsing and validation: the corpus of malformed policies with their exact errors, the
valid policies with the objects they build, selectors, and the effective-policy document."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rainbowd.core.policy import (
    KNOB_KEYS,
    Budget,
    CleanupAction,
    ConnectionsQuery,
    Consolidate,
    Knobs,
    Operator,
    Policy,
    PolicyError,
    PrometheusSettings,
    Requirement,
    Rule,
    Selector,
    SelectorError,
    StepDown,
    matchers_problem,
    parse_policy,
    parse_selector,
    policy_to_document,
    policy_warnings,
)
from rainbowd.policyfile import load_policy_file, load_policy_text

POLICIES = Path(__file__).parent / "policies"
REPO = Path(__file__).parents[2]
INVALID = sorted((POLICIES / "invalid").glob("*.yaml"))
VALID = sorted((POLICIES / "valid").glob("*.yaml"))
HEADER = {"apiVersion": "rainbowd.io/v1alpha1", "kind": "DrainPolicy"}
DAYS = 'durations stop at hours (h), write "48h"'
NAME_RULE = (
    "at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
)
PREFIX_RULE = (
    "the prefix before '/' must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
)


def valid(name: str) -> Policy:
    return load_policy_file(POLICIES / "valid" / name)


def errors_of(document: object) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    return caught.value.errors


# --- the corpus ----------------------------------------------------------------------------------

# An .expected file writes the list of every knob key as this, so a new knob needs no edit there.
EVERY_KNOB = "{every knob}"


def expected_errors(path: Path) -> list[str]:
    text = path.with_suffix(".expected").read_text(encoding="utf-8")
    return text.replace(EVERY_KNOB, ", ".join(KNOB_KEYS)).splitlines()


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30
    for path in INVALID:
        assert path.with_suffix(".expected").is_file(), f"{path.name} has no .expected"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_policy_gives_exactly_the_expected_errors(path: Path) -> None:
    expected = expected_errors(path)
    with pytest.raises(PolicyError) as caught:
        load_policy_text(path.read_text(encoding="utf-8"), source="policy.yaml")
    assert caught.value.errors == expected
    assert str(caught.value) == "\n".join(expected)


def test_every_error_of_a_document_comes_out_at_once() -> None:
    path = POLICIES / "invalid" / "multiple-errors.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(path.read_text(encoding="utf-8"), source="policy.yaml")
    paths = [e.removeprefix("policy.yaml: ").split(":")[0] for e in caught.value.errors]
    # Top level, each section and each rule: nothing stops at the first problem.
    for where in ("apiVersion", "dryRun", "prometheus.url", "prometheus.timeout"):
        assert where in paths
    assert {"rules[0].conectionFloor", "rules[0].connectionFloor", "rules[1].name"} <= set(paths)
    assert "rules[2]" in paths
    assert len(caught.value.errors) >= 10


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_policy_loads_and_its_document_reads_back_equal(path: Path) -> None:
    policy = load_policy_file(path)
    assert parse_policy(policy_to_document(policy)) == policy
    # The document is plain data: it survives YAML (for check-policy) unchanged.
    document = policy_to_document(policy)
    assert parse_policy(yaml.safe_load(yaml.safe_dump(document))) == policy


# --- valid policies: the objects they build ------------------------------------------------------


def test_minimal_policy_is_all_built_in_defaults() -> None:
    policy = valid("minimal.yaml")
    assert policy == Policy(rules=())
    assert policy.defaults == Knobs()
    assert policy_warnings(policy) == ["rules: no rules, so no Deployment will be managed"]


def test_rule_knobs_override_defaults_which_override_built_ins() -> None:
    policy = valid("overrides.yaml")
    assert policy.dry_run is True
    assert policy.paused is False
    assert policy.defaults == Knobs(
        connection_floor=5, max_colors=6, abandoned_after=timedelta(hours=12)
    )
    chat, rest = policy.rules
    assert chat.name == "chat"
    assert chat.namespaces == frozenset({"chat", "chat-staging"})
    assert chat.selector.requirements == (
        Requirement("app", Operator.IN, frozenset({"chat-olark-com"})),
    )
    assert chat.knobs == Knobs(
        connection_floor=25,  # the rule's
        max_colors=None,  # the rule's null: no cap, not the defaults' 6
        max_retired_age=None,
        action=CleanupAction.SCALE,
        abandoned_after=timedelta(hours=12),  # from defaults
        min_retired_age=timedelta(minutes=30),  # built in
    )
    assert rest.knobs == policy.defaults
    assert rest.namespaces is None
    assert rest.selector == Selector()
    assert rest.matches("anywhere", {}) and not chat.matches("other", {"app": "chat-olark-com"})
    assert policy.rule_for("chat", {"app": "chat-olark-com"}) is chat
    assert policy.rule_for("chat", {"app": "web"}) is rest
    assert policy_warnings(policy) == []


def test_every_key_set_explicitly() -> None:
    policy = valid("full.yaml")
    assert policy.paused is True
    assert policy.app_label == "app.kubernetes.io/name"
    assert policy.color_label == "example.com/color"
    assert policy.prometheus == PrometheusSettings(
        url="https://prometheus.example.com:9443/prom", timeout=timedelta(seconds=2.5)
    )
    assert policy.connections == ConnectionsQuery(
        metric="rainbow_open_connections",
        matchers='job="chat", env!~"dev|test"',
        namespace_label="kubernetes_namespace",
        app_label="service",
        color_label="release",
        pod_label="kubernetes_pod_name",
    )
    assert policy.max_disruptions == Budget(count=5, per=timedelta(minutes=30))
    assert policy.defaults == Knobs(
        min_retired_age=timedelta(hours=1, minutes=30),
        connection_floor=3,
        drain_hold=timedelta(seconds=90),
        max_colors=2,
        max_retired_age=timedelta(hours=1, minutes=30),
        action=CleanupAction.DELETE,
        keep_scaled_down=0,
        max_disruptions=Budget(count=0, per=timedelta(minutes=1)),
        abandoned_after=timedelta(0),
        scale_up_grace=timedelta(0),
        consolidate=Consolidate(
            after=timedelta(minutes=45), every=timedelta(minutes=10), keep_pods=2
        ),
        step_down=StepDown(every=timedelta(hours=2), max_pods=3),
        deadline_ahead=timedelta(minutes=15),
    )
    (api,) = policy.rules
    assert api.connections == ConnectionsQuery(
        metric=None,
        matchers="",
        query="sum by (kubernetes_namespace, service, release) (api_sockets)",
        namespace_label="kubernetes_namespace",
        app_label="service",
        color_label="release",
    )
    assert api.knobs == Knobs(
        min_retired_age=timedelta(0),
        connection_floor=0,
        drain_hold=timedelta(milliseconds=300),
        max_colors=1,
        max_retired_age=timedelta(hours=48),
        action=CleanupAction.SCALE_THEN_DELETE,
        keep_scaled_down=10,
        max_disruptions=Budget(count=3, per=timedelta(hours=1)),
        abandoned_after=None,
        scale_up_grace=timedelta(hours=2),
        consolidate=None,
        step_down=None,
        deadline_ahead=timedelta(minutes=2),
    )
    assert policy.queries == (api.connections,)


def test_rule_connections_replace_the_top_level_ones_wholesale() -> None:
    policy = parse_policy(
        {
            **HEADER,
            "connections": {"metric": "a", "labels": {"namespace": "ns"}},
            "rules": [
                {"name": "one"},
                {"name": "two", "connections": {"metric": "b"}},
                {"name": "three", "connections": {"metric": "a", "labels": {"namespace": "ns"}}},
            ],
        }
    )
    one, two, three = policy.rules
    assert (
        one.connections == policy.connections == ConnectionsQuery(metric="a", namespace_label="ns")
    )
    # Not merged: the rule's block starts from the built-in defaults, so `ns` is not inherited.
    assert two.connections == ConnectionsQuery(metric="b")
    assert policy.queries == (one.connections, two.connections)
    assert three.connections == one.connections


def test_a_configmap_holding_the_policy() -> None:
    policy = valid("configmap.yaml")
    (rule,) = policy.rules
    assert rule.name == "rainbow-deploys"
    assert rule.knobs == replace(Knobs(), drain_hold=timedelta(minutes=2))


def test_sections_of_commented_out_lines_mean_defaults() -> None:
    policy = valid("empty-sections.yaml")
    assert policy == Policy(
        rules=(Rule(name="all", knobs=Knobs(), connections=ConnectionsQuery()),)
    )


def test_the_example_policy_is_valid_and_manages_the_demo_app() -> None:
    policy = load_policy_file(REPO / "config" / "policy.yaml")
    assert [r.name for r in policy.rules] == ["rainbow-deploys"]
    assert policy.rule_for("default", {"app": "rainbow-deploys"}) is policy.rules[0]
    assert policy_warnings(policy) == []


def test_the_example_policy_catch_all_is_valid_once_uncommented() -> None:
    text = (REPO / "config" / "policy.yaml").read_text(encoding="utf-8")
    head, sep, tail = text.partition("  # - name:")
    assert sep, "the commented-out catch-all rule is missing"
    uncommented = re.sub(r"(?m)^  # ", "  ", sep + tail)
    uncommented = re.sub(r"(?m)^  #   ", "    ", uncommented)
    policy = load_policy_text(head + uncommented, source="policy.yaml")
    assert len(policy.rules) == 2
    assert policy.rules[1].knobs.max_colors is None


def test_the_shipped_configmap_is_valid() -> None:
    policy = load_policy_file(REPO / "k8s" / "base" / "policy-configmap.yaml")
    assert policy.rules


# --- errors built in code: paths and messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"connectionFloor": "ten"}, 'connectionFloor: expected a non-negative integer, got "ten"'),
        ({"maxColors": 0}, "maxColors: must be >= 1, got 0"),
        ({"maxColors": True}, "maxColors: expected an integer >= 1, or null for no cap, got true"),
        ({"keepScaledDown": False}, "keepScaledDown: expected a non-negative integer, got false"),
        ({"conectionFloor": 1}, 'conectionFloor: unknown key (did you mean "connectionFloor"?)'),
        ({"MaxColors": 1}, 'MaxColors: unknown key (did you mean "maxColors"?)'),
        ({"drain_hold": "1m"}, 'drain_hold: unknown key (did you mean "drainHold"?)'),
        ({"minRetiredAge": "2d"}, 'minRetiredAge: unknown unit "d" in duration "2d": ' + DAYS),
    ],
)
def test_knob_errors_name_their_rule(rule: dict[str, object], error: str) -> None:
    assert errors_of({**HEADER, "rules": [{"name": "chat", **rule}]}) == [f"rules[0].{error}"]


def test_errors_are_reported_per_rule_index() -> None:
    rules = [{"name": "a"}, {"name": "b"}, {"name": "c", "maxColors": 0}]
    assert errors_of({**HEADER, "rules": rules}) == ["rules[2].maxColors: must be >= 1, got 0"]


def test_age_check_uses_effective_knobs_and_says_where_each_comes_from() -> None:
    document = {
        **HEADER,
        "defaults": {"minRetiredAge": "1h"},
        "rules": [
            {"name": "a", "maxRetiredAge": "30m"},
            {"name": "b", "maxRetiredAge": "2h"},
            {"name": "c", "maxRetiredAge": None, "minRetiredAge": "1000h"},
        ],
    }
    assert errors_of(document) == [
        "rules[0]: maxRetiredAge (30m) must be >= minRetiredAge (1h, from defaults)"
    ]


def test_a_bad_age_is_reported_once_not_again_as_a_comparison() -> None:
    document = {**HEADER, "rules": [{"name": "a", "maxRetiredAge": "5x", "minRetiredAge": "1h"}]}
    assert errors_of(document) == [
        'rules[0].maxRetiredAge: unknown unit "x" in duration "5x" (units: ns, us, ms, s, m, h)'
    ]


def test_an_invalid_default_is_reported_at_defaults_not_at_every_rule() -> None:
    document = {**HEADER, "defaults": {"maxRetiredAge": "1m"}, "rules": [{"name": "a"}]}
    assert errors_of(document) == [
        "defaults: maxRetiredAge (1m) must be >= minRetiredAge (30m, built-in default)"
    ]


@pytest.mark.parametrize("document", [None, [], "policy", 3])
def test_a_document_that_is_not_a_mapping(document: object) -> None:
    assert len(errors_of(document)) == 1


def test_policy_error_is_a_value_error_listing_all() -> None:
    err = PolicyError(["a: one", "b: two"])
    assert isinstance(err, ValueError)
    assert str(err) == "a: one\nb: two"


# --- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("", ()),
        ("  ", ()),
        ("app=chat", (Requirement("app", Operator.IN, frozenset({"chat"})),)),
        ("app==chat", (Requirement("app", Operator.IN, frozenset({"chat"})),)),
        ("app!=chat", (Requirement("app", Operator.NOT_IN, frozenset({"chat"})),)),
        ("app=", (Requirement("app", Operator.IN, frozenset({""})),)),
        ("tier in (a, b)", (Requirement("tier", Operator.IN, frozenset({"a", "b"})),)),
        ("tier notin (a)", (Requirement("tier", Operator.NOT_IN, frozenset({"a"})),)),
        ("canary", (Requirement("canary", Operator.EXISTS),)),
        ("!legacy", (Requirement("legacy", Operator.DOES_NOT_EXIST),)),
        (
            "example.com/app = chat , ! legacy,x",
            (
                Requirement("example.com/app", Operator.IN, frozenset({"chat"})),
                Requirement("legacy", Operator.DOES_NOT_EXIST),
                Requirement("x", Operator.EXISTS),
            ),
        ),
    ],
)
def test_selector_syntax(text: str, requirements: tuple[Requirement, ...]) -> None:
    selector = parse_selector(text)
    assert selector.requirements == requirements
    assert selector.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app=a,", 'expected a label key after ",", got the end'),
        ("=chat", 'expected a label key at the start, got "="'),
        ("!", 'expected a label key after "!", got the end'),
        (
            "app chat",
            'expected "=", "==", "!=", "in", "notin", "," or the end after "app", got "chat"',
        ),
        ("app in a", 'expected "(" after "app in"'),
        ("app in (a", 'missing ")" after "app in ("'),
        ("app in (a b)", 'expected "," or ")" in "app in (...)"'),
        ("app in (a,)", 'expected a value in "app in (...)"'),
        ("app in ()", '"app in ()" needs at least one value'),
        ("n>1", 'the ">" operator is not supported in rule selectors'),
        ("app=a b=c", 'expected "," between requirements, got "b"'),
        ("Example.com/app=x", f'invalid label key "Example.com/app": {PREFIX_RULE}'),
        ("/app=x", f'invalid label key "/app": {PREFIX_RULE}'),
        ("app_=x", f'invalid label key "app_": {NAME_RULE}'),
        ("app=" + "v" * 64, 'invalid label value "' + "v" * 57 + f'...": {NAME_RULE}'),
    ],
)
def test_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert str(caught.value) == message


def test_not_equal_matches_a_missing_key_like_kubernetes() -> None:
    selector = parse_selector("env!=dev")
    assert selector.matches({}) and selector.matches({"env": "prod"})
    assert not selector.matches({"env": "dev"})


_LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.dictionaries(_LABEL, _LABEL, max_size=4), st.dictionaries(_LABEL, _LABEL, max_size=6))
def test_equality_selector_matches_exactly_the_superset_labels(
    wanted: dict[str, str], labels: dict[str, str]
) -> None:
    selector = parse_selector(",".join(f"{k}={v}" for k, v in wanted.items()))
    assert selector.matches(labels) == (wanted.items() <= labels.items())


# --- connections matchers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", 'job="chat"', "job='chat'", 'job=~"chat|web", env!="dev"', "a!~`x`,", ' a = "1" , b="2"'],
)
def test_plausible_matchers(text: str) -> None:
    assert matchers_problem(text) is None


@pytest.mark.parametrize(
    "text", ["job=chat", '{job="chat"}', 'job="chat" env="x"', '1job="x"', 'job=="x"', 'job="x']
)
def test_implausible_matchers(text: str) -> None:
    assert matchers_problem(text) is not None


def test_matchers_build_the_selector() -> None:
    policy = parse_policy({**HEADER, "connections": {"matchers": ' job="chat" '}})
    assert policy.connections.selector == 'rainbow_open_connections{job="chat"}'


# --- warnings ------------------------------------------------------------------------------------


def test_a_rule_after_one_that_matches_everything_it_would_is_flagged() -> None:
    policy = parse_policy(
        {
            **HEADER,
            "rules": [
                {"name": "chat", "namespaces": ["chat"], "selector": "app=chat"},
                {"name": "narrower", "namespaces": ["chat"], "selector": "app=chat,tier=web"},
                {"name": "other-ns", "namespaces": ["web"], "selector": "app=chat"},
                {"name": "all"},
                {"name": "late", "selector": "app=x"},
                # "all" takes Deployments only: this one still takes the Rollouts.
                {"name": "rollouts-too", "kinds": ["Deployment", "Rollout"]},
            ],
        }
    )
    assert policy_warnings(policy) == [
        'rules[1]: never matches anything: rules[0] ("chat") comes first and matches '
        "everything it would",
        'rules[4]: never matches anything: rules[3] ("all") comes first and matches '
        "everything it would",
    ]


def test_a_rule_takes_argo_rollouts_only_when_its_kinds_say_so() -> None:
    policy = parse_policy(
        {**HEADER, "rules": [{"name": "both", "kinds": ["Rollout", "Deployment"]}, {"name": "d"}]}
    )
    both, plain = policy.rules
    assert both.kinds == {"Deployment", "Rollout"} and plain.kinds == {"Deployment"}
    assert policy.rule_for("chat", {"app": "chat"}, "Rollout") is both
    assert (
        parse_policy({**HEADER, "rules": [{"name": "d"}]}).rule_for(
            "chat", {"app": "chat"}, "Rollout"
        )
        is None
    )
    rules = policy_to_document(policy)["rules"]
    assert isinstance(rules, list) and rules[0]["kinds"] == ["Deployment", "Rollout"]
    assert parse_policy(policy_to_document(policy)) == policy


@pytest.mark.parametrize(
    ("kinds", "error"),
    [
        ([], "rules[0].kinds: an empty list takes nothing; leave it out to take Deployments only"),
        ("Rollout", 'rules[0].kinds: expected a list of Deployment and Rollout, got "Rollout"'),
        (
            ["Rolout"],
            'rules[0].kinds[0]: expected one of Deployment, Rollout, got "Rolout" '
            '(did you mean "Rollout"?)',
        ),
    ],
)
def test_a_bad_kinds_list_names_the_rule_and_the_item(kinds: object, error: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({**HEADER, "rules": [{"name": "r", "kinds": kinds}]})
    assert [e for e in caught.value.errors if "kinds" in e] == [error]


# --- files ---------------------------------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy_file(missing)
    assert caught.value.errors == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(PolicyError) as caught:
        load_policy_file(str(tmp_path))
    (error,) = caught.value.errors
    assert error.startswith(f"{tmp_path}: cannot read: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"apiVersion: \xff\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert caught.value.errors == [f"{path}: not UTF-8 text (invalid start byte at byte 12)"]


def test_errors_carry_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.yaml").write_text("kind: DrainPolicy\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as caught:
        load_policy_file("p.yaml")
    assert caught.value.errors == ['p.yaml: apiVersion: required: "rainbowd.io/v1alpha1"']


def test_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("apiVersion: rainbowd.io/v1alpha1\nkind: x\n"))
    with pytest.raises(PolicyError) as caught:
        load_policy_file("-")
    assert caught.value.errors == ['<stdin>: kind: expected "DrainPolicy", got "x"']


# --- any document: a Policy or a PolicyError, never a crash ---------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=100),
    st.floats(allow_nan=True),
    st.sampled_from(["", "0", "90s", "2d", "-1m", "scale", "app=chat", "chat", "http://p:9090"]),
    st.text(max_size=8),
)
_KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "dryRun",
        "rules",
        "defaults",
        "connections",
        "prometheus",
        "name",
        "namespaces",
        "selector",
        "metric",
        "query",
        "labels",
        "url",
        "timeout",
        "maxColors",
        "minRetiredAge",
        "maxRetiredAge",
        "action",
        "connectionFloor",
    ]
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_document_parses_or_fails_with_path_prefixed_errors(
    document: dict[str, object],
) -> None:
    try:
        policy = parse_policy({**HEADER, **document})
    except PolicyError as exc:
        assert exc.errors
        for error in exc.errors:
            assert re.match(r"^[A-Za-z]+(\[\d+\])?[.:\[]", error), error
    else:
        assert parse_policy(policy_to_document(policy)) == policy


def test_connections_read_from_the_recording_rules() -> None:
    policy = parse_policy(
        {**HEADER, "connections": {"source": "recorded", "ruleInterval": "30s"}, "rules": []}
    )
    assert policy.connections == ConnectionsQuery(
        recorded=True, rule_interval=timedelta(seconds=30)
    )
    document = policy_to_document(policy)
    assert document["connections"]["source"] == "recorded"  # type: ignore[index]
    assert parse_policy(document) == policy
    assert parse_policy({**HEADER, "connections": {"source": "raw"}}).connections == (
        ConnectionsQuery()
    )
    narrowed = {"source": "recorded", "matchers": 'ns="chat"', "labels": {"namespace": "ns"}}
    assert parse_policy({**HEADER, "connections": narrowed}).connections.matchers == 'ns="chat"'


@pytest.mark.parametrize(
    ("connections", "error"),
    [
        ({"source": "rules"}, 'connections.source: expected one of raw, recorded, got "rules"'),
        (
            {"source": "recorded", "query": "x"},
            "connections.source: recorded cannot be combined with a free query",
        ),
        ({"ruleInterval": "0s"}, "connections.ruleInterval: "),
        (
            {"source": "recorded", "matchers": 'app="chat", job="chat"'},
            "connections.matchers: with source recorded, matchers narrow the recorded series, "
            "which keep only the labels namespace, app, color: job cannot be matched",
        ),
    ],
)
def test_a_bad_source_is_named(connections: dict[str, str], error: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy({**HEADER, "connections": connections})
    assert any(line.startswith(error) for line in raised.value.errors), raised.value.errors
