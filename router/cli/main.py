"""The `router` command: serve, api, worker, check, status, retry, dead, orphan,
unroutable, pause, resume, skip, trace, messages, plugins, new-plugin."""

# The parser and the dispatch only: each subcommand lives in its own module
# (router.cli.serving, .check, .queues, .dead, .orphans, .unroutable,
# .messages, .scaffold),
# imported once the command line is parsed, so that a process imports what
# its subcommand needs and no other's (`--help` needs none of them).

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config.settings import Settings

log = logging.getLogger("router")


def _positive(text: str) -> int:
    """A --count: a whole number from 1 (0 or less would read as 'all')."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1 (leave --count out for all)")
    return n


def _limit(text: str) -> int:
    """A --limit: a whole number from 1 to 1000."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{n} is not from 1 to 1000")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The `router` command line (the README's "Commands" table lists it)."""
    parser = argparse.ArgumentParser(prog="router", description=__doc__)
    parser.add_argument("--routes", help="routes file (default: $ROUTES_FILE or routes.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("serve", "ingest API and delivery workers in one process"),
        ("api", "ingest API only (REDIS_URL, or the data/redis.url of a running serve)"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument(
            "--reload", action="store_true", help="restart on code changes (development)"
        )
        p.add_argument("--access-log", action="store_true", help="log every request")
    p = sub.add_parser(
        "worker", help="delivery workers only (REDIS_URL, or the data/redis.url of a running serve)"
    )
    p.add_argument(
        "--burst", action="store_true", help="deliver what can be delivered now, then exit"
    )
    sub.add_parser("check", help="validate routes.yaml and the plugins it names")
    sub.add_parser("plugins", help="list installed delivery plugins")
    p = sub.add_parser(
        "status", help="what every destination's queue holds (one conversation: DEST KEY)"
    )
    p.add_argument("destination", nargs="?", help="only this destination")
    p.add_argument("key", nargs="?", help="one ordering key (conversation) of DEST")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p = sub.add_parser(
        "retry",
        help="make keys waiting out a backoff due now (all, or the KEYs given); without "
        "KEYs also mark a destination that is down or held by a Retry-After up again",
    )
    p.add_argument("destination")
    p.add_argument("key", nargs="*", help="ordering keys (default: every waiting key)")
    p = sub.add_parser(
        "recount",
        help="count a destination's messages from its lanes again (after the last process "
        "of a version without counts stopped)",
    )
    p.add_argument("destination")
    p = sub.add_parser(
        "dead", help="dead letters and blocked keys: list, replay, purge, blocked, unblock"
    )
    p.add_argument("action", choices=["list", "replay", "purge", "blocked", "unblock"])
    p.add_argument("destination")
    p.add_argument("key", nargs="*", help="unblock: the ordering keys (default: all blocked)")
    p.add_argument(
        "--count",
        type=_positive,
        default=None,
        help="how many, oldest first (list: default 100; replay, purge: all)",
    )
    p.add_argument(
        "--into",
        metavar="DEST",
        help="replay: into this destination of routes.yaml, at the end of each key's lane "
        "(an orphaned destination's dead letters)",
    )
    p.add_argument("--json", action="store_true", help="list, blocked: JSON lines, not a table")
    p = sub.add_parser(
        "orphan",
        help="the queued messages of a destination removed from routes.yaml: move them "
        "into a configured one (in order per key), or purge them",
    )
    p.add_argument("action", choices=["move", "purge"])
    p.add_argument("destination", help="the orphaned destination")
    p.add_argument("--into", metavar="DEST", help="move: the destination of routes.yaml")
    p = sub.add_parser(
        "unroutable",
        help="items of requests answered 200 that a route could not route: list, "
        "replay (read again by this version), purge",
    )
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("route", help="the route's path, e.g. /webhooks/whatsapp")
    p.add_argument(
        "--count",
        type=_positive,
        default=None,
        help="how many, oldest first (list: default 100; replay, purge: all)",
    )
    p.add_argument("--json", action="store_true", help="list: JSON lines, not a table")
    p = sub.add_parser(
        "trace",
        help="a message's story (the message log): its state at each destination and "
        "every attempt, with its outcome, status, duration, error and answer",
    )
    p.add_argument("id", help="the message id (what ingest answered)")
    p.add_argument("--json", action="store_true", help="what GET /admin/messages/ID answers")
    p = sub.add_parser(
        "messages", help="a destination's logged messages, newest first (the message log)"
    )
    p.add_argument("destination")
    p.add_argument("--key", help="only this ordering key (conversation)")
    p.add_argument("--failed", action="store_true", help="only messages with a failed attempt")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="received since: an ISO 8601 time, ms since the epoch, or a duration back "
        "from now (15m, 2h, 7d)",
    )
    p.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="at most N, 1 to 1000 (default 50)"
    )
    p.add_argument("--json", action="store_true", help="what the admin API answers")
    for name, text in [
        (
            "pause",
            "pause a destination, or one conversation of it (KEY): nothing new is "
            "attempted, ingest goes on storing",
        ),
        ("resume", "resume a paused destination, or one paused conversation of it (KEY)"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("destination")
        p.add_argument(
            "key", nargs="?", help="one ordering key (conversation) of DEST (default: all of DEST)"
        )
    p = sub.add_parser(
        "skip",
        help="move one conversation's head message to the dead letters (an attempt in "
        "flight is fenced out); its next message goes next",
    )
    p.add_argument("destination")
    p.add_argument("key", help="the ordering key (conversation)")
    p = sub.add_parser(
        "new-plugin",
        help="write a plugin package, router-NAME, that passes its own test (docs/plugins.md)",
    )
    p.add_argument("name", help="the plugin's name: what `plugin:` or `format:` will say")
    p.add_argument(
        "--kind",
        choices=["delivery", "ingest"],
        default="delivery",
        help="a delivery plugin (a sink: `plugin: NAME`) or an ingest format "
        "(`format: NAME`); default delivery",
    )
    p.add_argument("--dir", default=".", help="where to write router-NAME/ (default: here)")
    return parser


def _runner(command: str) -> Callable[[Settings, argparse.Namespace], int]:
    """The function that runs `command`, its module imported only now."""
    if command in ("serve", "api"):
        from router.cli.serving import serve

        return serve
    if command == "worker":
        from router.cli.serving import worker

        return worker
    if command == "check":
        from router.cli.check import check

        return check
    if command == "plugins":
        from router.cli.check import plugins

        return plugins
    if command == "status":
        from router.cli.queues import status

        return status
    if command == "retry":
        from router.cli.queues import retry

        return retry
    if command == "recount":
        from router.cli.queues import recount

        return recount
    if command in ("pause", "resume"):
        from router.cli.queues import pause

        return pause
    if command == "skip":
        from router.cli.queues import skip

        return skip
    if command == "dead":
        from router.cli.dead import dead

        return dead
    if command == "orphan":
        from router.cli.orphans import orphan

        return orphan
    if command == "trace":
        from router.cli.messages import trace

        return trace
    if command == "messages":
        from router.cli.messages import messages

        return messages
    assert command == "unroutable", command
    from router.cli.unroutable import unroutable

    return unroutable


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "new-plugin":  # writes files: no environment, no routes.yaml
        from router.cli.scaffold import new_plugin

        return new_plugin(None, args)
    from router.config.settings import Settings, SettingsError
    from router.ops import logs

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"router: environment error: {exc}", file=sys.stderr)
        return 2
    overrides: dict[str, object] = {}
    if args.routes:
        overrides["routes_file"] = args.routes
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if args.command == "api":
        overrides["run_workers"] = False
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    if args.command == "dead" and args.action == "list" and args.count is None:
        args.count = 100
    logs.setup(settings.log_level, settings.log_format)
    if args.command in ("serve", "api", "worker", "check"):
        for warning in settings.warnings():
            log.warning("environment: %s", warning)
    # Only the commands that open destinations' sinks load SSL_CERT_FILE:
    # they refuse a bad one now, not at the first https delivery.
    opens_sinks = args.command in ("worker", "check") or (
        args.command == "serve" and settings.run_workers
    )
    if opens_sinks and settings.ca_file is not None:
        from router.plugin.tls import ca_file_problem

        if (problem := ca_file_problem(settings.ca_file)) is not None:
            print(f"router: environment error: {problem}", file=sys.stderr)
            return 2
    if not settings.metrics:
        from router.ops import metrics

        metrics.switch_off()
    if args.command in ("serve", "api", "worker") and not getattr(args, "burst", False):
        from router.runtime.reload import hold_sighup

        hold_sighup()  # SIGHUP reloads routes.yaml (router.runtime.reload), never ends a process
    return int(_runner(args.command)(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
