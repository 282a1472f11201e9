"""Reading a policy from YAML text, a file or a ConfigMap: the decoding layer in front of
`parse_policy`, shared by every policy source (the daemon's, `rainbowd plan`, `check-policy`).

Lives outside `core` because core imports no yaml. Every error it raises, whether YAML or
policy, is prefixed with the source name (the path as given) so people know which file is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rainbowd.core.policy import Policy, PolicyError, parse_policy

CONFIGMAP_KEY = "policy.yaml"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: PyYAML keeps the last one silently, so a knob
    repeated further down would quietly win over the one the reader sees first."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f'duplicate key "{key}"',
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            # PyYAML splits one sentence in two: "expected a single document in the stream",
            # "but found another document".
            sep = ", " if problem.startswith("but ") else ": "
            problem = f"{exc.context}{sep}{problem}"
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
        return f"not valid YAML: {problem}"
    return f"not valid YAML: {exc}"


def _prefixed(source: str, errors: list[str]) -> PolicyError:
    return PolicyError([f"{source}: {error}" for error in errors])


def load_policy_text(text: str, *, source: str) -> Policy:
    """Decode and validate a policy.yaml text (or a ConfigMap holding one under `policy.yaml`)."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _prefixed(source, [_yaml_error(exc)]) from exc
    if document is None:
        raise _prefixed(source, ["empty document: expected a DrainPolicy"])
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        return policy_from_configmap(document, source=source)
    try:
        return parse_policy(document)
    except PolicyError as exc:
        raise _prefixed(source, exc.errors) from None


def configmap_policy_text(configmap: Mapping[str, Any]) -> str | None:
    """The policy text a ConfigMap holds under `policy.yaml`; None when it holds none."""
    data = configmap.get("data")
    text = data.get(CONFIGMAP_KEY) if isinstance(data, Mapping) else None
    return text if isinstance(text, str) else None


def policy_from_configmap(configmap: Mapping[str, Any], *, source: str) -> Policy:
    """The policy of a ConfigMap, from a manifest file or from the API alike."""
    text = configmap_policy_text(configmap)
    if text is None:
        raise _prefixed(source, [f'a ConfigMap without data["{CONFIGMAP_KEY}"]: nothing to read'])
    return load_policy_text(text, source=f'{source}: data["{CONFIGMAP_KEY}"]')


def load_policy_file(path: str | Path) -> Policy:
    """Read and validate a policy file; `-` reads standard input."""
    if str(path) == "-":
        return load_policy_text(sys.stdin.read(), source="<stdin>")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _prefixed(source, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    except OSError as exc:
        raise _prefixed(source, [f"cannot read: {exc.strerror or exc}"]) from exc
    return load_policy_text(text, source=source)
