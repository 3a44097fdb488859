"""An exception as the one line an operator reads.

A failure the router reports (a plugin that cannot be imported, a sink
that refuses to start, a start-up that failed) is one line: the reason,
not a traceback (that goes to the debug log). Exception groups (anyio's
task groups wrap what fails inside them) are unwrapped to what was
raised in them.
"""

from __future__ import annotations


class Explained(Exception):
    """An error whose text already says what failed and where (a plugin's,
    naming its distribution): shown without its type's name."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions raised, inside any exception groups around them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def one_line(exc: BaseException, *, typed: bool = True) -> str:
    """`ValueError: url must start with http://` (`typed`: with the type's
    name, which says much when the text alone is terse, as `KeyError: 'x'`);
    an exception group's exceptions joined by "; ", each once."""
    texts: list[str] = []
    for leaf in leaves(exc):
        text = " ".join(str(leaf).split())  # a multi-line message, on one line
        if (typed and not isinstance(leaf, Explained)) or not text:
            text = f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__
        if text not in texts:
            texts.append(text)
    return "; ".join(texts)
