"""Kubernetes label selectors and label names: the `selector:` of a rule, parsed as Kubernetes
parses it, and the checks of label keys and values."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rainbowd.core.policy.fields import show


class Operator(enum.StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        # notin, as in Kubernetes: a missing key matches.
        value = labels.get(self.key)
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes label selector (`app=chat,tier in (a,b),!legacy`); empty matches all."""

    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


class SelectorError(ValueError):
    """A label selector that Kubernetes would not accept either."""


_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key (`app`, `example.com/tier`), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return (
            f"invalid label key {show(key)}: the prefix before '/' must be a DNS subdomain "
            "(lowercase letters, digits, '-' and '.')"
        )
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"invalid label key {show(key)}: at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value (empty is valid), or None."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            f"invalid label value {show(value)}: at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


_SELECTOR_TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|<|>|[^\s!=,()<>]+)")
_PUNCTUATION = ("!=", "==", "=", "!", ",", "(", ")", "<", ">")


class _Tokens:
    """The tokens of a selector, read one at a time."""

    def __init__(self, text: str) -> None:
        self.items: list[str] = []
        pos = 0
        while pos < len(text):
            match = _SELECTOR_TOKEN.match(text, pos)
            if match is None:  # only trailing whitespace is left
                break
            self.items.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token


def _key(token: str | None, after: str) -> str:
    if token is None or token in _PUNCTUATION:
        found = "the end" if token is None else f'"{token}"'
        raise SelectorError(f"expected a label key {after}, got {found}")
    problem = label_key_problem(token)
    if problem:
        raise SelectorError(problem)
    return token


def _value(token: str) -> str:
    problem = label_value_problem(token)
    if problem:
        raise SelectorError(problem)
    return token


def _set_values(tokens: _Tokens, name: str, op: str) -> frozenset[str]:
    """The values of `name in (a, b)` or `name notin (a)`, the operator already taken."""
    if tokens.take() != "(":
        raise SelectorError(f'expected "(" after "{name} {op}"')
    values: list[str] = []
    while True:
        token = tokens.take()
        if token is None:
            raise SelectorError(f'missing ")" after "{name} {op} ("')
        if token == ")" and not values:
            raise SelectorError(f'"{name} {op} ()" needs at least one value')
        if token in (",", ")", "(", "=", "==", "!=", "!", "<", ">"):
            raise SelectorError(f'expected a value in "{name} {op} (...)"')
        values.append(_value(token))
        closing = tokens.take()
        if closing == ")":
            return frozenset(values)
        if closing is None:
            raise SelectorError(f'missing ")" after "{name} {op} ("')
        if closing != ",":
            raise SelectorError(f'expected "," or ")" in "{name} {op} (...)"')


def _requirement(tokens: _Tokens) -> Requirement:
    first = tokens.take()
    if first == "!":
        return Requirement(_key(tokens.take(), 'after "!"'), Operator.DOES_NOT_EXIST)
    name = _key(first, "at the start" if tokens.pos == 1 else 'after ","')
    op = tokens.peek()
    if op is None or op == ",":
        return Requirement(name, Operator.EXISTS)
    if op in ("=", "==", "!="):
        tokens.take()
        # `a=` selects an empty value, as in Kubernetes.
        nxt = tokens.peek()
        value = "" if nxt is None or nxt == "," else _value(tokens.take() or "")
        kind = Operator.NOT_IN if op == "!=" else Operator.IN
        return Requirement(name, kind, frozenset((value,)))
    if op in ("in", "notin"):
        tokens.take()
        kind = Operator.IN if op == "in" else Operator.NOT_IN
        return Requirement(name, kind, _set_values(tokens, name, op))
    if op in ("<", ">"):
        raise SelectorError(f'the "{op}" operator is not supported in rule selectors')
    raise SelectorError(
        f'expected "=", "==", "!=", "in", "notin", "," or the end after "{name}", got "{op}"'
    )


def parse_selector(text: str) -> Selector:
    """Kubernetes label-selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
    `a`, `!a`, joined by commas. `!=` is notin with one value, so a missing key matches it."""
    tokens = _Tokens(text)
    if not tokens.items:
        return Selector((), text="")
    requirements = []
    while True:
        requirements.append(_requirement(tokens))
        token = tokens.take()
        if token is None:
            break
        if token != ",":
            raise SelectorError(f'expected "," between requirements, got "{token}"')
    return Selector(tuple(requirements), text=text.strip())
