"""The burn-down policy: typed, frozen, validated.

`types` holds the domain types, `knobs` the knob table every view of the knobs is derived from,
`presets` the connection sources and the per-pod series of each, `selectors` Kubernetes label
selectors, `parsing` policy.yaml to `Policy` (every error at once, each with its path),
`rendering` the effective policy back as a document.
"""

from rainbowd.core.policy.knobs import KNOB_KEYS, KNOBS, Knob
from rainbowd.core.policy.parsing import (
    matchers_problem,
    narrowing_warnings,
    parse_policy,
    policy_warnings,
)
from rainbowd.core.policy.presets import PRESET_NAMES, PRESETS, Preset, series_expr
from rainbowd.core.policy.rendering import policy_to_document
from rainbowd.core.policy.selectors import (
    Operator,
    Requirement,
    Selector,
    SelectorError,
    label_key_problem,
    label_value_problem,
    parse_selector,
)
from rainbowd.core.policy.types import (
    API_VERSION,
    DEFAULT_KINDS,
    DEPLOYMENT,
    KIND,
    ROLLOUT,
    WORKLOAD_KINDS,
    Budget,
    CleanupAction,
    ConnectionsQuery,
    Consolidate,
    Knobs,
    Policy,
    PolicyError,
    PrometheusSettings,
    Rule,
    StepDown,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_KINDS",
    "DEPLOYMENT",
    "KIND",
    "KNOBS",
    "KNOB_KEYS",
    "PRESETS",
    "PRESET_NAMES",
    "ROLLOUT",
    "WORKLOAD_KINDS",
    "Budget",
    "CleanupAction",
    "ConnectionsQuery",
    "Consolidate",
    "Knob",
    "Knobs",
    "Operator",
    "Policy",
    "PolicyError",
    "Preset",
    "PrometheusSettings",
    "Requirement",
    "Rule",
    "Selector",
    "SelectorError",
    "StepDown",
    "label_key_problem",
    "label_value_problem",
    "matchers_problem",
    "narrowing_warnings",
    "parse_policy",
    "parse_selector",
    "policy_to_document",
    "policy_warnings",
    "series_expr",
]
