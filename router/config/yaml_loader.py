"""routes.yaml's YAML read into plain values, bounded (aliases, nesting),
remembering the line of each key path so every problem is placed as
`file:line: key.path: what to fix`, on one line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from router.config.schema import ConfigError, Path
from router.config.variables import VariableNotSet, Variables


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# A YAML alias repeats its anchor's whole subtree, so nested aliases grow
# exponentially ("billion laughs": 9 levels of 9 make 387 million values from
# a 1 KB file). Values repeated through aliases are counted and refused past
# this bound: a real routes.yaml repeats a retry policy or a header block,
# tens of values, never thousands. Values written out are not counted: their
# cost is the size of the file.
MAX_ALIAS_EXPANSION = 10_000

# How deep mappings and lists may nest. A real routes.yaml nests about 5
# deep; past a few hundred the YAML composer and the walk below run out of
# Python stack (a traceback), and an alias inside itself nests forever.
MAX_NESTING = 64

# PyYAML contexts that mean "an opener on the context line was never
# closed", and what to call that opener in the message.
_UNCLOSED_OPENERS = (
    ("while parsing a flow sequence", "'['"),
    ("while parsing a flow mapping", "'{'"),
    ("while scanning a quoted scalar", "quote"),
)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooDeep(Exception):
    """Raised by _BoundedYamlLoader at the line nesting too deep."""

    def __init__(self, line: int) -> None:
        self.line = line


class _BoundedYamlLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_NESTING while it
    composes (its composer is recursive: deep nesting ends in RecursionError)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _leading_keys(path: Path) -> Path:
    """The named part of a path, up to the first list index: where to look
    for a problem found deep inside repeated or nested values."""
    for i, part in enumerate(path):
        if isinstance(part, int):
            return path[:i]
    return path


class Loader:
    """Turns YAML nodes into plain values, remembering the line of each path,
    refusing duplicate keys and substituting ${VAR} in strings."""

    def __init__(
        self,
        file: str,
        env: dict[str, str],
        lenient: bool = False,
        *,
        running: bool = False,
        broken: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.file = file
        # Read by a process that started earlier (a reload): its plugins and
        # environment are those of its start, while the operator's shell
        # (`router check`, `router plugins`) sees what was added since.
        self.running = running
        # Plugins that could not be loaded: (entry point name, why), one line each.
        self.broken = broken
        self.variables = Variables(env, lenient, running)
        self.lines: dict[Path, int] = {}
        self.constructor = yaml.SafeLoader("")
        self.walked: set[yaml.Node] = set()  # mappings and lists seen once
        self.repeated = 0  # values materialized again through aliases

    def error(self, path: Path, message: str) -> ConfigError:
        return ConfigError(self.place(path, message))

    def place(self, path: Path, message: str) -> str:
        """`file:line: key.path: message` on one line, for errors and warnings."""
        line = self.line(path)
        where = f"{self.file}:{line}" if line else self.file
        text = f"{where}: {dotted(path)}: {self.variables.shown(message)}"
        return " ".join(text.splitlines())  # one line, always

    def line(self, path: Path) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def load(self, text: str) -> Any:
        try:
            node = yaml.compose(text, Loader=_BoundedYamlLoader)
        except _TooDeep as exc:
            raise ConfigError(
                f"{self.file}:{exc.line}: mappings and lists nest deeper than "
                f"{MAX_NESTING} levels; no routes.yaml needs that, write it flatter"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.syntax_error_place(exc)}; fix the YAML there") from None
        if node is None:
            raise ConfigError(
                f"{self.file}: the file is empty; declare `routes:` and `destinations:`"
            )
        try:
            return self.value(node, ())
        except yaml.YAMLError as exc:  # e.g. a tag the safe loader refuses
            mark = getattr(exc, "problem_mark", None)
            where = f"{self.file}:{mark.line + 1}" if mark else self.file
            problem = " ".join(str(getattr(exc, "problem", None) or exc).splitlines())
            raise ConfigError(f"{where}: YAML error: {problem}; fix the YAML there") from None

    def syntax_error_place(self, exc: yaml.YAMLError) -> str:
        """`file:line: YAML syntax error: ...` at the line where the mistake starts.

        PyYAML's problem mark is where the parser gave up; for an unclosed
        `[`, `{` or quote that is lines later (often the next key), so the
        line named is the one holding the opener (the context mark), and
        the line where parsing failed follows in the text."""
        problem_mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None) or ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).splitlines())
        opener = next((o for c, o in _UNCLOSED_OPENERS if context.startswith(c)), None)
        if opener and context_mark is not None:
            # PyYAML names a key token '?' (its YAML indicator), though the
            # file has none: a `key:` is what it found.
            problem = problem.replace("but got '?'", "but got a `key:`")
            failed = f" on line {problem_mark.line + 1}" if problem_mark else ""
            return (
                f"{self.file}:{context_mark.line + 1}: YAML syntax error: the {opener} "
                f"on this line is not closed where expected ({problem}{failed})"
            )
        where = f"{self.file}:{problem_mark.line + 1}" if problem_mark else self.file
        return f"{where}: YAML syntax error: {problem}"

    def value(self, node: yaml.Node, path: Path, repeated: bool = False) -> Any:
        """The plain value of `node` at `path`; `repeated`: inside an alias."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        repeated = self.count(node, path, repeated)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            merged: dict[Any, Any] = {}  # from `<<` merge keys: defaults for `out`
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    self.merge(value_node, path, repeated, merged)
                    continue
                key = self.scalar(key_node, path)
                if not isinstance(key, str | int):
                    raise self.error(path, f"keys must be strings, got {key!r}")
                key = str(key)
                if key in out:
                    self.lines[(*path, key)] = key_node.start_mark.line + 1
                    raise self.error((*path, key), "duplicate key: each name may appear once")
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.value(value_node, (*path, key), repeated)
            return {**merged, **out}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i), repeated) for i, item in enumerate(node.value)]
        value = self.scalar(node, path)
        if isinstance(value, str):
            try:
                value = self.variables.substitute(value, path)
            except VariableNotSet as exc:
                raise self.error(path, exc.message) from None
        return value

    def merge(self, node: yaml.Node, path: Path, repeated: bool, into: dict[Any, Any]) -> None:
        """A `<<` merge key (YAML 1.1, as docker-compose files use it): the
        keys of the mapping, or of each mapping of a list, earlier ones
        first, become defaults of the mapping at `path`; its own keys win."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self.error(path, "`<<` merges mappings only (an alias of one, or a list)")
            for key, value in self.value(source, path, repeated).items():
                into.setdefault(key, value)

    def count(self, node: yaml.Node, path: Path, repeated: bool) -> bool:
        """Whether `node` is materialized again (an alias of a mapping or list
        already walked, or inside one); refuses too many such values and
        nesting too deep (an alias inside itself nests forever)."""
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            repeated = repeated or node in self.walked
            self.walked.add(node)
        if repeated:
            self.repeated += 1
        if self.repeated > MAX_ALIAS_EXPANSION:
            raise self.error(
                _leading_keys(path),
                f"YAML aliases repeat more than {MAX_ALIAS_EXPANSION} values "
                "(nested aliases?); write it out without aliases",
            )
        if len(path) > MAX_NESTING:
            raise self.error(
                _leading_keys(path),
                f"the values nest deeper than {MAX_NESTING} levels (a YAML alias "
                "inside its own anchor?); write it out without aliases",
            )
        return repeated

    def scalar(self, node: yaml.Node, path: Path) -> Any:
        """The value of a scalar (or a key) as YAML reads it."""
        try:
            return self.constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:  # 2001-13-45, a 5000-digit int
            text = str(node.value)
            shown = text if len(text) <= 40 else text[:40] + "..."
            reason = " ".join(str(exc).splitlines()).split(";")[0]  # not Python's advice
            raise self.error(
                path, f"YAML cannot read {shown!r} ({reason}); quote it if it is text"
            ) from None

    def not_installed(self, kind: str, name: str, installed: Iterable[str]) -> str:
        """Why a `plugin:` or `format:` names nothing this process has: the
        broken plugin of that entry point name, or what is installed (and
        the broken plugins, one of which may be it)."""
        named = [why for ep, why in self.broken if ep == name]
        if named:
            return f"{kind} {name!r} cannot be used: {named[0]}"
        where = " in this process (installed after it started? restart it)"
        text = (
            f"{kind} {name!r} is not installed{where if self.running else ''}; "
            f"installed: {', '.join(sorted(installed)) or 'none'}"
        )
        if self.broken:
            text += f"; broken (one may provide it): {' | '.join(why for _, why in self.broken)}"
        return text
