"""Plain values converted into the schema's types (msgspec), a refusal
placed at the key it names, with what is allowed there."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from router.config.schema import Path, dec_hook
from router.config.yaml_loader import Loader

_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*)`$", re.DOTALL)


def _type_at(typ: Any, parts: Path) -> Any:
    """The msgspec type info of the value at `parts` below `typ` (None if unknown)."""
    info: Any = msgspec.inspect.type_info(typ)
    for part in (*parts, None):
        if isinstance(info, msgspec.inspect.UnionType):  # X | None, str | Struct
            types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            structs = [t for t in types if isinstance(t, msgspec.inspect.StructType)]
            info = (structs or types)[0]
        if part is None:
            return info
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.name == part), None)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        else:
            return None
    return info


def convert(
    loader: Loader, obj: Any, typ: Any, base: Path, also_allowed: tuple[str, ...] = ()
) -> Any:
    try:
        return msgspec.convert(obj, typ, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc)
        parts: Path = ()
        in_mapping = False
        match = _MSGSPEC_PATH.search(message)
        if match:
            message = message[: match.start()]
            # msgspec writes a mapping's key as [...]: the path stops there.
            text, mapped, rest = match.group(1).partition("[...]")
            for key, index in _PATH_PART.findall(text):
                parts = (*parts, int(index) if index else key)
            in_mapping = bool(mapped) and not rest
        # A plugin's __post_init__ may name the option it refuses
        # (router.plugin.sinks.OptionError): the error is placed there.
        parts = (*parts, *getattr(exc.__cause__, "where", ()))
        info = _type_at(typ, parts)
        if in_mapping and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        hint = ""
        unknown = _UNKNOWN_FIELD.match(message)
        if unknown:
            message = f"unknown field `{unknown.group(1)}`"
            parts = (*parts, unknown.group(1))
            if isinstance(info, msgspec.inspect.StructType):
                allowed = [f.name for f in info.fields] + list(also_allowed)
                hint = f"; allowed here: {', '.join(allowed)}"
        elif isinstance(info, msgspec.inspect.LiteralType):
            hint = f"; allowed: {', '.join(map(str, info.values))}"
        raise loader.error((*base, *parts), message + hint) from None
