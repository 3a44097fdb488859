"""The `body:` option of the `http` plugin: the JSON sent built from the
message received (docs/outbound-webhooks.md).

A template is YAML:

- a string is a **path** into the message: ``wa_id``, ``contact.name``,
  ``photos[0].url``, ``photos[-1]`` (the last), ``["odd.key"]`` (a key with
  characters other than letters, digits, ``_``, ``-`` and non-ASCII letters,
  in JSON string syntax), ``$`` (the whole message; ``$.wa_id`` is ``wa_id``);
  a trailing ``?`` makes it **optional**;
- a string starting with ``const:`` is that text, as it is (``const:whatsapp``);
- a number, ``true``, ``false`` or ``null`` is itself;
- a mapping builds an object (its keys are taken literally: ``meta.source``
  is one key with a dot), a list builds a list.

A path the message does not have fails the message permanently (no retry
can add the field: it goes to the dead letters at once, or blocks its key
with `retry.on_exhausted: block`; DeliveryFailed's `permanent`), unless it
is optional: then the object key (or list item) is left out.

Compiled when routes.yaml loads, so a bad path is a config error at its
line; rendering reads the message once per attempt and writes compact JSON.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from router.plugin.sinks import DeliveryFailed, OptionError

CONST_PREFIX = "const:"

Where = tuple[str | int, ...]

# One step after the first: .name, [index] or ["key"].
_NAME = r"[^\s.\[\]\"?$]+"
_STEP = re.compile(rf'\.({_NAME})|\[(-?\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_FIRST_NAME = re.compile(_NAME)

_MISSING = object()


class Template:
    def render(self, message: Any, where: str) -> Any:
        """The value, or _MISSING when an optional path is not there."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Path(Template):
    text: str  # as written, for errors
    steps: tuple[str | int, ...]
    optional: bool

    def render(self, message: Any, where: str) -> Any:
        value = message
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    value = _MISSING
                    break
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    value = _MISSING
                    break
                value = value[step]
        if value is _MISSING and not self.optional:
            raise DeliveryFailed(
                f"{where}: the message has no {self.text} (a required path; write "
                f"{self.text}? to leave it out instead, or require the field in the route's "
                "fields: to refuse such messages at ingest)",
                permanent=True,
            )
        return value


@dataclass(frozen=True, slots=True)
class Const(Template):
    value: Any

    def render(self, message: Any, where: str) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class Object(Template):
    fields: tuple[tuple[str, Template], ...]

    def render(self, message: Any, where: str) -> Any:
        out = {}
        for key, template in self.fields:
            value = template.render(message, f"{where}.{key}")
            if value is not _MISSING:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Array(Template):
    items: tuple[Template, ...]

    def render(self, message: Any, where: str) -> Any:
        out = []
        for i, template in enumerate(self.items):
            value = template.render(message, f"{where}[{i}]")
            if value is not _MISSING:
                out.append(value)
        return out


def compile_template(spec: Any, where: Where = ("body",)) -> Template:
    """The template `spec` (the YAML under `body:`) describes; raises
    OptionError naming the place of a bad path."""
    if isinstance(spec, dict):
        fields = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise OptionError(where, f"keys are strings, got {key!r}")
            fields.append((key, compile_template(value, (*where, key))))
        return Object(tuple(fields))
    if isinstance(spec, list):
        return Array(tuple(compile_template(item, (*where, i)) for i, item in enumerate(spec)))
    if isinstance(spec, str):
        if spec.startswith(CONST_PREFIX):
            return Const(spec[len(CONST_PREFIX) :])
        return parse_path(spec, where)
    if isinstance(spec, float) and not math.isfinite(spec):
        raise OptionError(where, "JSON has no NaN or infinity; write a number or a const: text")
    if spec is None or isinstance(spec, bool | int | float):
        return Const(spec)
    raise OptionError(where, f"a {type(spec).__name__} is not a JSON value; write it as a string")


def parse_path(text: str, where: Where) -> Path:
    """`text` as a path: see the module's docstring."""
    optional = text.endswith("?")
    body = text[:-1] if optional else text
    steps: list[str | int] = []
    pos = 0
    if body.startswith("$"):
        pos = 1
    else:
        first = _FIRST_NAME.match(body)
        if first is None and not body.startswith("["):
            raise OptionError(where, _path_error(text, 0))
        if first is not None:
            steps.append(first.group())
            pos = first.end()
    while pos < len(body):
        step = _STEP.match(body, pos)
        if step is None:
            raise OptionError(where, _path_error(text, pos))
        name, index, quoted = step.groups()
        if index is not None:
            steps.append(int(index))
        elif quoted is not None:
            try:
                steps.append(json.loads(quoted))
            except ValueError:
                raise OptionError(where, _path_error(text, pos)) from None
        else:
            steps.append(name)
        pos = step.end()
    if optional and len(where) == 1:
        raise OptionError(where, "the whole body cannot be optional; remove the ?")
    return Path(text, tuple(steps), optional)


def _path_error(text: str, pos: int) -> str:
    return (
        f"cannot read the path {text!r} at character {pos + 1}: write names joined by dots, "
        '[n] for a list item, ["key"] for other keys, $ for the whole message, '
        "or const:text for a fixed text"
    )


def render(template: Template, body: bytes) -> bytes:
    """The JSON `template` builds from the message `body` (JSON bytes)."""
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:  # ingest stores JSON only: not expected
        raise DeliveryFailed(f"body: the message is not JSON: {exc}", permanent=True) from None
    return msgspec.json.encode(template.render(message, "body"))
