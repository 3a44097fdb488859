"""The event loop a Python peer runs on: the router's own choice.

The router runs every process on uvloop when it is installed
(ROUTER_LOOP=auto, router/cli/serving.py); a peer or floor measured beside it on
plain asyncio would be handicapped by the loop, not by its design.
"""

import asyncio


def run(main, loop="auto"):
    """asyncio.run(main) on `loop`: auto (uvloop when installed), uvloop, asyncio."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def name():
    """The loop `run(..., "auto")` picks here: "uvloop" or "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
