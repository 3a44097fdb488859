"""Content routing: the `when:` filters of a route's destinations, and the
paths into nested JSON they (and `ordering_key`) read.

A filter is written in routes.yaml (docs/content-routing.md):

- a leaf reads one path and applies one operator:
  ``{path: message.type, equals: image}``, ``{path: ..., in: [a, b]}``,
  ``{path: ..., exists: true}``, ``{path: ..., prefix: "44"}``;
- combinators: ``{all: [...]}``, ``{any: [...]}``, ``{not: <filter>}``.

It is compiled once, at load, into nested closures (`compile_filter`): the
hot path calls one function per destination and walks no spec. Every
problem is a FilterError naming its place inside the filter, which the
config loader turns into its one-line ConfigError.

Decisions:
- A path is dot-separated keys into nested objects. A segment of digits
  also indexes an array (``entries.0.id``); on an object it is a key like
  any other. ``\\.`` writes a dot inside a key, ``\\\\`` a backslash.
- A path that does not lead to a value (a key absent, an index past the
  end, a step into a string) is *missing*; ``null`` is a value.
- Equality is JSON-typed: ``"1"`` does not equal ``1``, ``true`` does not
  equal ``1``; numbers compare as numbers (``1`` equals ``1.0``). `equals`
  and `in` take scalars (string, number, boolean, null) only; `prefix`
  matches strings only (the number 44123 has no prefix "44").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# What a path yields when it leads nowhere (distinct from a JSON null).
MISSING: Any = object()

Filter = Callable[[Any], bool]  # the decoded message -> whether it matches
Getter = Callable[[Any], Any]  # the decoded message -> the value, or MISSING

OPERATORS = ("equals", "in", "exists", "prefix")
COMBINATORS = ("all", "any", "not")
_SHAPES = (
    "{path: ..., equals: ...}, {path: ..., in: [...]}, {path: ..., exists: true}, "
    "{path: ..., prefix: ...}, {all: [...]}, {any: [...]} or {not: {...}}"
)


class FilterError(ValueError):
    """A filter (or path) that cannot be compiled; `where`: its place below
    the filter (keys and list indexes), for the config's one-line error."""

    def __init__(self, where: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


# -- paths ---------------------------------------------------------------------


def split_path(text: object) -> tuple[str, ...]:
    """The segments of a dotted path; ValueError naming what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(
            f"a path is a non-empty string of dot-separated keys (e.g. message.type), got {text!r}"
        )
    segments: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            escaped = next(chars, None)
            if escaped not in (".", "\\"):
                raise ValueError(
                    f"path {text!r}: a backslash escapes '.' or '\\' only "
                    "(\\. is a dot inside a key)"
                )
            current.append(escaped)
        elif c == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
    segments.append("".join(current))
    if "" in segments:
        raise ValueError(
            f"path {text!r} has an empty segment; write keys separated by single dots, "
            "e.g. message.type (\\. is a dot inside a key)"
        )
    return tuple(segments)


def compile_path(text: object) -> Getter:
    """A function reading the value at `text` in a decoded message, or MISSING."""
    segments = split_path(text)
    if len(segments) == 1:
        (key,) = segments

        def top(message: Any) -> Any:
            return message.get(key, MISSING) if isinstance(message, dict) else MISSING

        return top
    steps = tuple((s, int(s) if s.isdigit() and s.isascii() else None) for s in segments)

    def nested(message: Any) -> Any:
        value = message
        for key, index in steps:
            if isinstance(value, dict):
                value = value.get(key, MISSING)
                if value is MISSING:
                    return MISSING
            elif index is not None and isinstance(value, list) and index < len(value):
                value = value[index]
            else:
                return MISSING
        return value

    return nested


def is_nested(text: str) -> bool:
    """Whether a path reads more than a top-level key as written."""
    return "." in text or "\\" in text


# -- values --------------------------------------------------------------------


def _scalar_tag(value: Any) -> tuple[str, Any] | None:
    """A value with its JSON type, so that equal tags mean JSON-equal
    scalars ("1" != 1, true != 1, 1 == 1.0); None for arrays and objects."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return None


def _wanted(value: Any, where: tuple[str | int, ...], operator: str) -> tuple[str, Any]:
    tag = _scalar_tag(value)
    if tag is None or (isinstance(value, float) and not math.isfinite(value)):
        shown = type(value).__name__ if tag is None else repr(value)
        raise FilterError(
            where,
            f"`{operator}` compares with a string, number, boolean or null, got {shown} "
            "(quote it if it is text)",
        )
    return tag


# -- filters -------------------------------------------------------------------


def compile_filter(spec: Any, where: tuple[str | int, ...] = ()) -> Filter:
    """The filter written as `spec` (routes.yaml, parsed), compiled."""
    if not isinstance(spec, dict) or not spec:
        raise FilterError(where, f"a filter is a mapping: {_SHAPES}")
    unknown = [k for k in spec if k not in (*OPERATORS, *COMBINATORS, "path")]
    if unknown:
        raise FilterError(
            (*where, unknown[0]),
            f"unknown key `{unknown[0]}` in a filter; allowed: path, "
            f"{', '.join(OPERATORS)}, {', '.join(COMBINATORS)}",
        )
    combinators = [k for k in spec if k in COMBINATORS]
    if combinators:
        name = combinators[0]
        if len(spec) > 1:
            other = next(k for k in spec if k != name)
            raise FilterError(
                (*where, other),
                f"`{name}` stands alone in its filter, `{other}` is beside it; "
                f"put each condition in its own filter inside `{name}`",
            )
        return _combinator(name, spec[name], (*where, name))
    return _leaf(spec, where)


def _combinator(name: str, value: Any, where: tuple[str | int, ...]) -> Filter:
    if name == "not":
        inner = compile_filter(value, where)
        return lambda message: not inner(message)
    if not isinstance(value, list) or not value:
        raise FilterError(where, f"`{name}` takes a non-empty list of filters")
    parts = tuple(compile_filter(item, (*where, i)) for i, item in enumerate(value))
    if len(parts) == 1:
        return parts[0]
    if name == "all":
        return lambda message: all(p(message) for p in parts)
    return lambda message: any(p(message) for p in parts)


def _leaf(spec: dict[str, Any], where: tuple[str | int, ...]) -> Filter:
    operators = [k for k in spec if k in OPERATORS]
    if "path" not in spec:
        raise FilterError(where, f"`{operators[0]}` needs a `path` to read (e.g. message.type)")
    if not operators:
        raise FilterError(where, f"a filter with `path` needs one of {', '.join(OPERATORS)}")
    if len(operators) > 1:
        raise FilterError(
            (*where, operators[1]),
            f"`{operators[0]}` and `{operators[1]}` in one filter: one operator per filter; "
            "combine filters with all/any",
        )
    try:
        get = compile_path(spec["path"])
    except ValueError as exc:
        raise FilterError((*where, "path"), str(exc)) from None
    operator = operators[0]
    value = spec[operator]
    at = (*where, operator)
    if operator == "equals":
        want = _wanted(value, at, operator)
        return lambda message: _scalar_tag(get(message)) == want
    if operator == "in":
        if not isinstance(value, list) or not value:
            raise FilterError(at, "`in` takes a non-empty list of values")
        wants = frozenset(_wanted(v, (*at, i), operator) for i, v in enumerate(value))
        return lambda message: _scalar_tag(get(message)) in wants
    if operator == "exists":
        if not isinstance(value, bool):
            raise FilterError(at, f"`exists` is true or false, got {value!r}")
        if value:
            return lambda message: get(message) is not MISSING
        return lambda message: get(message) is MISSING
    # prefix
    if not isinstance(value, str):
        raise FilterError(
            at, f'`prefix` is a string (it matches strings only); write it quoted: "{value}"'
        )

    def starts(message: Any) -> bool:
        found = get(message)
        return isinstance(found, str) and found.startswith(value)

    return starts
