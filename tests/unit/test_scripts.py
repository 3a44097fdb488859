"""The Lua scripts: each names its KEYS at the top, and the Python side's
list (router.queue.scripts.SCRIPT_KEYS) agrees with it by name and position."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from router.queue.scripts import PER_DESTINATION, SCRIPT_KEYS, source

LUA = resources.files("router.queue").joinpath("lua")
SCRIPTS = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))


def test_every_script_has_a_key_list_and_every_list_a_script() -> None:
    assert set(SCRIPTS) - {"_lib"} == set(SCRIPT_KEYS)


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_the_header_names_the_keys_the_python_side_passes(name: str) -> None:
    text = LUA.joinpath(f"{name}.lua").read_text()
    header = re.search(r"^-- KEYS(?:, per destination)?: (.+)$", text, re.MULTILINE)
    assert header, f"{name}.lua has no `-- KEYS: ...` line"
    assert tuple(header.group(1).split(", ")) == SCRIPT_KEYS[name]
    if name in PER_DESTINATION:
        # Named offsets into each destination's group of keys.
        offsets = re.search(r"^local ([\w, ]+) = ([\d, ]+)", text, re.MULTILINE)
        assert offsets
        names = [n.lower() for n in offsets.group(1).split(", ")]
        places = [int(i) for i in offsets.group(2).split(", ")]
        assert names == list(SCRIPT_KEYS[name]) and places == list(range(1, len(names) + 1))
        return
    # `local a, b = KEYS[1], KEYS[2]`, possibly over two lines.
    assign = re.search(r"^local ([\w, ]+) =\s*((?:KEYS\[\d+\],?\s*)+)", text, re.MULTILINE)
    assert assign, f"{name}.lua does not name its keys with `local ... = KEYS[1], ...`"
    names = assign.group(1).split(", ")
    places = [int(i) for i in re.findall(r"KEYS\[(\d+)\]", assign.group(2))]
    assert tuple(names) == SCRIPT_KEYS[name]
    assert places == list(range(1, len(names) + 1))
    body = text[assign.end() :]
    assert not re.search(r"KEYS\[", body), f"{name}.lua uses KEYS[n] past its header"


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_shared_helpers_are_written_once(name: str) -> None:
    """The clock, the nudge and the fencing check live in _lib.lua only."""
    text = LUA.joinpath(f"{name}.lua").read_text()
    assert "redis.call('TIME')" not in text
    assert "'LTRIM'" not in text
    assert "redis.call('HGET', owner" not in text
    assert source(name).endswith(text)


# A top-level definition of _lib.lua, and where the next one starts.
DEFINITION = re.compile(r"^local (?:function (\w+)\(|([A-Z_]+) = )", re.MULTILINE)


def test_the_prelude_is_made_of_single_definitions() -> None:
    """scripts.prelude_for cuts _lib.lua at each top-level `local`: each must
    define one name (a function, or a constant in capitals)."""
    lib = LUA.joinpath("_lib.lua").read_text()
    assert len(DEFINITION.findall(lib)) == len(re.findall(r"^local ", lib, re.MULTILINE)) > 20


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_script_gets_every_helper_it_names_and_only_those(name: str) -> None:
    """What each script is sent with: the definitions of _lib.lua it uses,
    directly or through another, in _lib.lua's order (each function of the
    prelude is made anew on every call)."""
    lib = LUA.joinpath("_lib.lua").read_text()
    defined = [a or b for a, b in DEFINITION.findall(lib)]
    prelude = source(name).removesuffix(LUA.joinpath(f"{name}.lua").read_text())
    sent = [a or b for a, b in DEFINITION.findall(prelude)]
    assert sent == [d for d in defined if d in sent]  # _lib.lua's order
    words = set(re.findall(r"\w+", LUA.joinpath(f"{name}.lua").read_text()))
    for helper in sent:
        part = prelude[prelude.index(f"local {'function ' * helper.islower()}{helper}") :]
        words |= set(re.findall(r"\w+", part.split("\nlocal ", 1)[0]))
    assert set(sent) == {d for d in defined if d in words}


def test_no_script_formats_a_number_as_a_c_long() -> None:
    """Lua's string.format('%d') is a C long: 32 bits on 32-bit Redis and
    Valkey builds and on Windows ports, where a time in milliseconds
    (1.7e12) overflows, a lease deadline written as 1970 would be taken as
    expired and the key claimed twice. Numbers are formatted with %.0f."""
    formats = [
        (path.name, match)
        for path in sorted(LUA.iterdir())
        if path.name.endswith(".lua")
        for match in re.findall(r"string\.format\(\s*'[^']*'", path.read_text())
        if "%d" in match
    ]
    assert formats == []
