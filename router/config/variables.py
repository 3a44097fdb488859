"""`${VAR}` substitution in routes.yaml's strings: `${VAR}` is the
variable's value, `${VAR:-default}` the default when it is unset or empty,
`$$` a `$`. Every value put into the file is remembered (it may be a
secret: router.config.secret_values) with the string as written."""

from __future__ import annotations

import re
from dataclasses import dataclass

from router.config.schema import Path
from router.ops import redaction
from router.ops.redaction import Redactor

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class VariableNotSet(Exception):
    """A `${VAR}` without a default whose variable is not set: the loader
    places the message at the value's path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Expansion:
    """A `${VAR}` the loader replaced by the variable's value (not by its
    `:-default`, which is written in the file)."""

    path: Path
    name: str
    value: str
    text: str  # the whole string at `path`, after substitution
    start: int  # where `value` begins in `text`

    def secrets(self) -> list[str]:
        """What of the value must never be shown: all of it, except where it
        is only a URL's scheme, host or port (`http://${BOT_HOST}:8080/`);
        of a whole URL from one variable, its password and query values."""
        if _URL_START.match(self.text) is None:
            return [self.value]
        if self.start == 0 and len(self.value) == len(self.text):
            return redaction.url_secrets(self.text)
        scheme, host = redaction.url_open_parts(self.text)
        end = self.start + len(self.value)
        inside = any(low <= self.start and end <= high for low, high in (scheme, host))
        return [] if inside else [self.value]


_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Variables:
    """The environment a routes file is read with, and what its `${VAR}`s
    became."""

    def __init__(self, env: dict[str, str], lenient: bool = False, running: bool = False) -> None:
        self.env = env
        self.lenient = lenient  # an unset ${VAR} stays as written (load_layout)
        self.running = running  # read by a process that started earlier (a reload)
        self.expansions: list[Expansion] = []  # every ${VAR} replaced by its value
        self.written: dict[Path, str] = {}  # strings with a ${VAR}, as written

    def shown(self, message: str) -> str:
        """`message` naming each variable (`${BOT_TOKEN}`) where it holds
        the value the variable put into the file: config errors and
        warnings quote values (a URL), never a variable's."""
        return Redactor({e.value: f"${{{e.name}}}" for e in self.expansions})(message)

    def substitute(self, text: str, path: Path) -> str:
        """`text` (the string at `path`) with its `${VAR}`s and `$$`s replaced."""
        pieces: list[str] = []
        size = 0  # the length of the result so far
        found: list[tuple[str, str, int]] = []  # each variable used: name, value, start
        end = 0
        for match in _VAR.finditer(text):
            before = text[end : match.start()]
            value, name = self._replacement(match)
            if name is not None:
                found.append((name, value, size + len(before)))
            pieces += [before, value]
            size += len(before) + len(value)
            end = match.end()
        if not pieces:
            return text
        result = "".join(pieces) + text[end:]
        if found:
            self.written[path] = text
            self.expansions += [Expansion(path, n, v, result, at) for n, v, at in found]
        return result

    def _replacement(self, match: re.Match[str]) -> tuple[str, str | None]:
        """What one `$$` or `${VAR}` becomes, and the variable's name when
        its value (not a default) is what it becomes."""
        if match.group(0) == "$$":
            return "$", None
        name, default = match.group(1), match.group(2)
        if name in self.env and (self.env[name] != "" or default is None):
            return self.env[name], name
        if default is not None:
            return default, None
        if self.lenient:
            return match.group(0), None
        where = " in this process's environment (set after it started? restart it)"
        raise VariableNotSet(
            f"environment variable {name} is not set{where if self.running else ''}; "
            f"set it or write ${{{name}:-default}}"
        )
