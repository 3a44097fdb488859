"""`router new-plugin NAME [--kind delivery|ingest] [--dir PATH]`: write a
plugin package, `router-NAME`, that passes its own test right away.

What it writes (router.cli.scaffold_files holds the files' text):

- ``pyproject.toml``: the distribution ``router-NAME``, the module
  ``router_NAME``, the entry point ``NAME`` in the group ``router`` (what
  a destination's ``plugin:`` or a route's ``format:`` names), a ``test``
  extra with pytest;
- ``router_NAME/__init__.py``: a sink (delivery: POST each message to a
  ``url``, failures as ``DeliveryFailed``) or a format (ingest: a signed
  JSON webhook, one message per request), importing only ``router.plugin``;
- ``README.md``: how to install, test and use it;
- ``tests/test_NAME.py``: a real router (``router serve`` as a subprocess,
  its embedded Redis-compatible server in a temporary directory) with the
  installed plugin, posting over HTTP and checking what a real HTTP server
  of the test receives. Self-contained: pytest and the standard library;
  nothing of the router's own tests, which are not a public API.

It never overwrites: an existing ``router-NAME`` directory is refused, and
so is a name already taken here (an entry point of the group ``router``, an
installed ``router-NAME`` distribution: installing the new package would
replace or collide with it). The files are written into a temporary sibling
directory renamed at the end: a write failing half way leaves nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import keyword
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from router.cli.scaffold_files import files

if TYPE_CHECKING:
    from router.config.settings import Settings

# A plugin's name: what routes.yaml writes, part of a module's name.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Names the router itself answers to: a plugin by them would be broken.
_TAKEN = {"http"}


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a plugin, or None."""
    if not _NAME.fullmatch(name):
        return (
            f"{name!r} is not a plugin name: a lower-case letter, then lower-case letters, "
            "digits or _ (at most 40), e.g. sms or my_queue"
        )
    if keyword.iskeyword(name) or name.endswith("_"):
        return f"{name!r} is not a plugin name: use a plain word such as sms or my_queue"
    if name in _TAKEN:
        return f"{name!r} is the router's own {name} destination: choose another name"
    if name in {ep.name for ep in importlib.metadata.entry_points(group="router")}:
        return f"{name!r} is the name of a plugin installed here: choose another name"
    try:
        importlib.metadata.distribution(f"router-{name}")
    except importlib.metadata.PackageNotFoundError:
        return None
    return (
        f"router-{name} is installed here (installing yours would replace it): choose another name"
    )


def write_plugin(name: str, kind: str, parent: Path) -> Path:
    """Write the package `router-<name>` under `parent`; returns its path.
    Raises FileExistsError when it exists (nothing is written then)."""
    root = parent / f"router-{name}"
    if root.exists():
        raise FileExistsError(root)
    draft = Path(tempfile.mkdtemp(prefix=f".router-{name}-", dir=parent))
    try:
        for relative, text in files(name, kind).items():
            path = draft / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        draft.chmod(0o777 & ~_umask())  # mkdtemp's 0700, as mkdir would have made it
        if root.exists():  # made meanwhile: still never overwritten
            raise FileExistsError(root)
        draft.rename(root)
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise
    return root


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_plugin(settings: Settings | None, args: argparse.Namespace) -> int:
    problem = name_problem(args.name)
    if problem is not None:
        print(f"router new-plugin: {problem}", file=sys.stderr)
        return 2
    parent = Path(args.dir)
    if not parent.is_dir():
        print(f"router new-plugin: --dir {parent} is not a directory", file=sys.stderr)
        return 2
    try:
        root = write_plugin(args.name, args.kind, parent)
    except FileExistsError:
        print(
            f"router new-plugin: {parent / f'router-{args.name}'} exists: not overwritten "
            "(choose another --dir or name)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"router new-plugin: cannot write under {parent}: {exc}", file=sys.stderr)
        return 2
    used = "plugin" if args.kind == "delivery" else "format"
    print(f"wrote {root} ({args.kind} plugin, `{used}: {args.name}` in routes.yaml); next:")
    print(f"  pip install -e '{root}[test]'   # into the router's environment")
    print(f"  pytest {root}")
    return 0
