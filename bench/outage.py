"""The destination's circuit breaker (docs/destination-health.md) against a
bot that fails for everyone, or for a few poison conversations, or both:
each scenario once with the breaker on and once off, in one run.

    .venv/bin/python bench/outage.py [--scenario all] [--check]
    # quick: --conversations 50 --outage 10 --healthy-seconds 8 --max-seconds 30
    # another tree's router (a change to measure): --router-src ../wt-change

Per run: a bot (aiohttp, in this process, bench/breaker_rig.py) that answers
500 while down and always to a poison conversation's messages, else 200,
recording every request; `router serve` (one process, the chatbot plugin
with the default retry policy and max_in_flight, LOG_LEVEL=warning, its
output in bench/results/logs-outage) against the bench's Redis. Healthy
conversations post two messages each; a poison one posts one.

- outage: the bot is down for everyone for --outage seconds from the first
  post; the conversations post at once. Goal (issue 11): <= 100 failed
  attempts, all delivered <= 5 s after the recovery.
- poison: --poison conversations post together while traffic is quiet;
  --quiet seconds later the healthy ones post, spread evenly over
  --healthy-seconds. Goals (issue 18): every healthy message delivered, its
  delay (POST answered to the bot's 200) p99 <= 3 s, <= 400 attempts on the
  poison conversations until 5 s after the last healthy delivery.
- outage-poison: the outage, with --poison-in-outage poison conversations
  posting first (still failing after the recovery). Goals: the outage's,
  and <= 4 breaker transitions.
- retry: the poison scenario (the healthy posts begin as soon as the router
  logs the breaker down), with `router retry chatbot` run once, at the
  first moment from --retry-at seconds into the healthy posting when the
  router has logged the breaker down and --retry-waiting healthy messages
  are waiting (when it never is before the posting ends: when any are
  waiting). Goal: those waiting then are delivered <= 5 s after the
  command starts.

Breaker transitions are the router's "is down" and "is up again" lines. A
run stops when every healthy message is delivered (then, with poison
conversations, 5 s more) or --max-seconds after its first post, reporting
what was delivered by then. Goals are judged for both settings; with
--check a failed goal of the breaker on fails the run (exit status 1).

Not a speed figure, so not a bench/run.py part: the two settings differ in
behaviour by an order of magnitude, not in per cent.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from alone import run_alone
from breaker_rig import (
    Bot,
    Message,
    Router,
    delivered,
    in_order_once,
    percentile,
    wait_until,
)
from context import Context
from procs import DESTINATION, say, set_router_src
from redisdb import flush

SCENARIOS = ("outage", "poison", "outage-poison", "retry")
# Poison attempts are counted until this long after the last healthy delivery.
TAIL = 5.0
# How long the retry scenario waits for the messages waiting at the retry.
RETRY_PATIENCE = 15.0
MESSAGES = 2  # per healthy conversation


@dataclass
class Figure:
    """One measure of one run; `passed` is None for a measure without a goal."""

    text: str
    goal: str = ""
    passed: bool | None = None


Result = dict[str, Figure]  # measure -> figure, in the table's row order


@dataclass
class Table:
    title: str
    runs: list[tuple[str, Result]] = field(default_factory=list)  # (column, figures)

    def lines(self) -> list[str]:
        head = "| measure | goal |" + "".join(f" {c} | PASS/FAIL |" for c, _ in self.runs)
        lines = [f"## {self.title}", "", head, "| --- | --- |" + " ---: | --- |" * len(self.runs)]
        for measure, first in self.runs[0][1].items():
            cells = "".join(
                f" {r[measure].text} | {verdict(r[measure].passed)} |" for _, r in self.runs
            )
            lines.append(f"| {measure} | {first.goal} |{cells}")
        return lines


def verdict(passed: bool | None) -> str:
    return "" if passed is None else "PASS" if passed else "FAIL"


def seconds(value: float, digits: int = 1) -> str:
    return "not delivered" if math.isinf(value) else f"{value:.{digits}f}"


def transitions(router: Router, goal: int | None = None) -> Figure:
    down, up = router.transitions()
    text = f"{down + up} ({down} down, {up} up)"
    return Figure(text) if goal is None else Figure(text, f"<= {goal}", down + up <= goal)


def conversations(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def messages_of(healthy: list[str]) -> list[Message]:
    """Every conversation's first message, then every one's second, ..."""
    return [(c, str(n)) for n in range(MESSAGES) for c in healthy]


class OperatorRetry:
    """`router retry chatbot`, once: at the first look from `after` on when
    the router has logged the breaker down and at least `enough` healthy
    messages are waiting (posted, not acknowledged); from `fallback` on,
    when any are waiting (a breaker that is seldom down may never be down
    with that many waiting)."""

    def __init__(
        self,
        bot: Bot,
        router: Router,
        healthy: list[Message],
        when: tuple[float, int, float],  # (after, enough, fallback)
    ) -> None:
        self.bot, self.router, self.healthy = bot, router, set(healthy)
        self.after, self.enough, self.fallback = when
        self.started = math.nan
        self.waiting: list[Message] = []
        self.down = False
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self) -> None:
        now = time.monotonic()
        if self.proc is not None or now < self.after:
            return
        acked = self.bot.first_ok
        waiting = [m for m in self.router.posted if m in self.healthy and m not in acked]
        down = self.router.logged_down()
        if not waiting or (now < self.fallback and not (down and len(waiting) >= self.enough)):
            return
        self.started, self.waiting, self.down = now, waiting, down
        self.proc = self.router.start_cli(f"{self.router.name}-cli", "retry", DESTINATION)

    def settled(self) -> bool:
        """Its waiting messages delivered, or past our patience."""
        if self.proc is None:
            return False
        now = time.monotonic()
        return now > self.started + RETRY_PATIENCE or all(
            m in self.bot.first_ok for m in self.waiting
        )


class OutagePart:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tables: list[Table] = []

    def run(self) -> None:
        args = self.ctx.args
        chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
        drive: dict[str, Callable[[Bot, Router], Result]] = {
            "outage": lambda bot, router: self._outage(bot, router, poison=0),
            "poison": lambda bot, router: self._poison(bot, router, retry=False),
            "outage-poison": lambda bot, router: self._outage(
                bot, router, poison=args.poison_in_outage
            ),
            "retry": lambda bot, router: self._poison(bot, router, retry=True),
        }
        for scenario in chosen:
            table = Table(self._title(scenario))
            self.tables.append(table)
            for rnd in range(args.rounds):
                for breaker in (True, False):
                    setting = "on" if breaker else "off"
                    name = f"{scenario}-{setting}-r{rnd}"
                    flush(self.ctx.redis_url)
                    with Bot().serving() as bot, Router(self.ctx, bot, breaker, name) as router:
                        result = drive[scenario](bot, router)
                    column = f"breaker {setting}" + (f" r{rnd + 1}" if args.rounds > 1 else "")
                    table.runs.append((column, result))
                    say(f"{name}: " + "; ".join(f"{k}: {v.text}" for k, v in result.items()))
                    failed = [k for k, v in result.items() if v.passed is False]
                    if breaker and failed and args.check:
                        self.ctx.problems.append(f"{scenario}, breaker on: failed {failed}")

    def _title(self, scenario: str) -> str:
        a = self.ctx.args
        healthy = f"{a.conversations} healthy conversations x {MESSAGES} messages"
        return {
            "outage": f"Outage: {healthy}, bot down {a.outage:g}s",
            "poison": f"Poison: {a.poison} poison conversations, then {healthy} "
            f"over {a.healthy_seconds:g}s",
            "outage-poison": f"Outage with poison: {a.poison_in_outage} poison conversations, "
            f"{healthy}, bot down {a.outage:g}s",
            "retry": f"Operator retry while poison holds the breaker down: {a.poison} poison, "
            f"{healthy} over {a.healthy_seconds:g}s",
        }[scenario]

    def _ordered(self, bot: Bot, router: Router, healthy: list[str]) -> Figure:
        """Out of order or twice is a bug whatever the setting: a problem."""
        ok = in_order_once(bot, healthy, MESSAGES)
        if not ok:
            self.ctx.problems.append(f"{router.name}: healthy messages out of order or twice")
        return Figure("yes" if ok else "NO", "yes", ok)

    def _end(self, bot: Bot, began: float, all_in: bool, poison: bool) -> tuple[float, str]:
        """When counting stops: TAIL after the last healthy delivery (when
        poison conversations are still failing) or the cap. Waits for it."""
        a = self.ctx.args
        if not all_in:
            return time.monotonic(), f"{time.monotonic() - began:.0f} (cap)"
        end = max(bot.first_ok.values()) + (TAIL if poison else 0.0)
        time.sleep(max(0.0, end - time.monotonic()))
        return end, f"{min(end, began + a.max_seconds) - began:.0f}"

    def _outage(self, bot: Bot, router: Router, poison: int) -> Result:
        a = self.ctx.args
        poisoned = conversations("4499", poison)
        healthy = conversations("4491", a.conversations)
        messages = messages_of(healthy)
        bot.poison, bot.down = frozenset(poisoned), True
        began = time.monotonic()
        for c in poisoned:
            router.post(c, "0")
        for wa_id, mensaje in messages:
            router.post(wa_id, mensaje)
        time.sleep(max(0.0, began + a.outage - time.monotonic()))
        bot.down = False
        up_at = time.monotonic()
        all_in = wait_until(delivered(bot, messages), began + a.max_seconds, lambda: None)
        end, length = self._end(bot, began, all_in, poison > 0)

        acked = [bot.first_ok[m] for m in messages if m in bot.first_ok]
        failed = sum(1 for x in bot.attempts(healthy, until=up_at) if x.status == 500)
        recovery = max(acked) - up_at if all_in else math.inf
        result = {
            "failed attempts on healthy conversations during the outage": Figure(
                f"{failed:,}", "<= 100", failed <= 100
            ),
            "last healthy delivery after recovery (s)": Figure(
                seconds(recovery), "<= 5", recovery <= 5
            ),
            "healthy delivered": Figure(
                f"{len(acked)}/{len(messages)}", "all", len(acked) == len(messages)
            ),
            "healthy delivered once each, in order": self._ordered(bot, router, healthy),
        }
        if poison:
            result["attempts on poison conversations"] = Figure(
                f"{len(bot.attempts(poisoned, until=end)):,}"
            )
        result["breaker transitions"] = transitions(router, 4 if poison else None)
        result["run length (s)"] = Figure(length)
        return result

    def _poison(self, bot: Bot, router: Router, retry: bool) -> Result:
        a = self.ctx.args
        poisoned = conversations("4499", a.poison)
        healthy = conversations("4491", a.conversations)
        messages = messages_of(healthy)
        bot.poison = frozenset(poisoned)
        began = time.monotonic()
        for c in poisoned:
            router.post(c, "0")
        # The retry wants healthy messages waiting while the breaker is
        # down: they post as soon as the router says it is.
        quiet_over = router.logged_down if retry else lambda: False
        wait_until(quiet_over, began + a.quiet, lambda: None)
        posting = time.monotonic()
        when = (posting + a.retry_at, a.retry_waiting, posting + a.healthy_seconds)
        operator = OperatorRetry(bot, router, messages, when)
        between = operator if retry else lambda: None
        router.post_spread(messages, a.healthy_seconds, between)
        all_acked = delivered(bot, messages)
        done = (lambda: operator.settled() or all_acked()) if retry else all_acked
        all_in = wait_until(done, began + a.max_seconds, between)
        if retry:
            return self._retried(bot, router, operator, messages, healthy)
        end, length = self._end(bot, began, all_in, poison=True)

        delays = [bot.first_ok.get(m, math.inf) - router.posted[m] for m in messages]
        acked = sum(1 for d in delays if not math.isinf(d))
        p50, p99, worst = (percentile(delays, p) for p in (0.5, 0.99, 1.0))
        poison_attempts = len(bot.attempts(poisoned, until=end))
        return {
            "healthy delivered": Figure(f"{acked}/{len(messages)}", "all", acked == len(messages)),
            "healthy delay p50 / p99 / max (s)": Figure(
                " / ".join(seconds(x, 2) for x in (p50, p99, worst)), "p99 <= 3", p99 <= 3
            ),
            "attempts on poison conversations": Figure(
                f"{poison_attempts:,}", "<= 400", poison_attempts <= 400
            ),
            "breaker transitions": transitions(router),
            "healthy delivered once each, in order": self._ordered(bot, router, healthy),
            "run length (s)": Figure(length),
        }

    def _retried(
        self,
        bot: Bot,
        router: Router,
        operator: OperatorRetry,
        messages: list[Message],
        healthy: list[str],
    ) -> Result:
        said = "not run: no healthy message was waiting"
        took, passed, took_text = math.inf, None, "not run"
        if operator.proc is not None:
            status = operator.proc.wait(30)
            log = router.ctx.procs.logs / f"{router.name}-cli.log"
            said = " ".join(log.read_text(errors="replace").split()) or "(nothing)"
            if status != 0:
                self.ctx.problems.append(f"{router.name}: router retry exited {status}: {said}")
            if all(m in bot.first_ok for m in operator.waiting):
                took = max(bot.first_ok[m] for m in operator.waiting) - operator.started
            passed, took_text = took <= 5, seconds(took)
        acked = sum(1 for m in messages if m in bot.first_ok)
        return {
            "breaker down at the retry (by the router's log)": Figure(
                "yes" if operator.down else "no"
            ),
            "healthy messages waiting at the retry": Figure(str(len(operator.waiting))),
            "those delivered after the retry began (s)": Figure(took_text, "<= 5", passed),
            "`router retry chatbot` said": Figure(said),
            "breaker transitions": transitions(router),
            "healthy delivered by the end": Figure(f"{acked}/{len(messages)}"),
            "healthy delivered once each, in order": self._ordered(bot, router, healthy),
        }

    def report_lines(self) -> list[str]:
        lines: list[str] = []
        for table in self.tables:
            lines += [*table.lines(), ""]
        return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scenario", choices=[*SCENARIOS, "all"], default="all")
    add("--conversations", type=int, default=200, help="healthy conversations (2 messages each)")
    add("--outage", type=float, default=30.0, help="seconds the bot is down for everyone")
    add("--poison", type=int, default=25, help="poison conversations (poison, retry)")
    add("--poison-in-outage", type=int, default=6, help="poison conversations (outage-poison)")
    add("--quiet", type=float, default=3.0, help="seconds from the poison posts to the healthy")
    add("--healthy-seconds", type=float, default=20.0, help="healthy posts spread over (poison)")
    add("--retry-at", type=float, default=0.0, help="retry: not before, from the healthy posts")
    add("--retry-waiting", type=int, default=10, help="retry: healthy waiting, breaker down")
    add("--max-seconds", type=float, default=90.0, help="longest run, from its first post")
    add("--rounds", type=int, default=1)
    add("--check", action="store_true", help="exit 1 when a goal of the breaker on fails")
    add("--router-src", help="run the router of this source tree (e.g. a change to measure)")
    args = parser.parse_args()
    if args.router_src:
        set_router_src(args.router_src)
    if args.scenario in ("all", "outage", "outage-poison") and args.max_seconds <= args.outage:
        parser.error("--max-seconds must be more than --outage")
    return run_alone("outage", args, OutagePart)


if __name__ == "__main__":
    sys.exit(main())
