"""Benchmark the router beside its peers and floors, in one run, as ratios.

Absolute numbers drift on a shared 2-core machine; the router and the
programs it is compared with (bench/peers) run in the same invocation,
against the same Redis and the same sink, so their ratios hold.

    make bench                       # installs bench/requirements.txt, then runs this
    .venv/bin/python bench/run.py [--rounds 3] [-n 5000] [--profile] [--docs]
    .venv/bin/python bench/run.py --only ingest delivery   # some parts only

The parts, each in its own module:
- Ingest (bench/ingest.py, bench/burst.py): wrk against bare_ingest's
  /v1/hello (framework ceiling) and /v1/store_message (ingest floor) and
  `router api`, on the chosen server stack and on asyncio + h11; the
  router with dedup, route auth and fan-out; 1 vs 2 processes; a burst of
  1,000 connections at once.
- Delivery (bench/delivery.py): N messages pre-loaded into the router's
  lanes, drained to the sink by `router worker --burst` (aiohttp and httpx
  transports), beside aiohttp and httpx alone (client_floor.py), arq and
  BullMQ (skipped without node).
- Latency (bench/latency.py): one `router serve` fed at a steady rate;
  POST answered -> sink received, p50/p99.
- Cost growth (bench/growth.py): ingest and delivery rates with 1k to 1M
  messages queued over 10 to 100k keys; Redis bytes per message.
- Redis Cluster (bench/cluster.py): ingest (wrk against `router api`) and
  delivery (`router worker --burst`) on a Cluster of 1 master and of 3
  masters (no replicas), the destination at `shards: 6`, each judged
  against one valkey-server of the same binary that is not cluster-enabled
  (issue 23's 0.95), the bench's Redis beside as context; msg/s per
  process, commands and Redis CPU per message per master, and what P
  processes on M masters reach (an estimate).
- Observability (bench/observability.py): the cost of Prometheus metrics
  and of the per-attempt log line, against ROUTER_METRICS=0 in the same
  round: `router api` under wrk with /metrics scraped once a second, and
  `router worker` draining N messages with metrics on (scraped) and with
  metrics on + LOG_LEVEL=info.
- Tracing (bench/tracing.py): the cost of OpenTelemetry spans exported
  over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT set, a collector that answers
  200), against tracing off in the same round: `router api` under wrk and
  `router worker` draining N messages.
- Outbound rate limit (bench/outbound_rate.py): 3 `router worker`
  processes deliver with `rate_limit: {requests: 80, period: 1s}`; the
  rate at the sink as a ratio to the limit (goal: within 5 %).
- Delivery to RabbitMQ (bench/broker_amqp.py): `router worker --burst`
  publishing N preloaded messages with the amqp plugin, beside a plain
  aio-pika publisher with confirms, as a ratio (goal >= 0.5); skipped
  without RabbitMQ at 127.0.0.1:5672.
- Brokers (bench/broker_nats.py, bench/broker_mqtt.py; `--only nats mqtt`):
  `router worker --burst` delivering through the nats plugin (JetStream
  and core) and the mqtt plugin (QoS 1) beside a plain client of the same
  library publishing the same messages with the same ack, as a ratio (goal
  >= 0.5); skipped, and said so, where the broker is not on 127.0.0.1.
Every load is bounded in time and runs on 127.0.0.1 only.

Writes a markdown report (bench/report.py) to stdout and
bench/results/latest.md, and the ratios as a picture (bench/chart.py) to
bench/results/ratios.svg; with --docs also replaces the generated block of
docs/benchmarks.md and docs/benchmarks.svg. --router-src DIR runs the
router from another source tree (a scratch copy with a change to measure)
against the same peers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import chart
import procs
import report
from broker_amqp import BrokerAmqp
from broker_mqtt import MqttPart
from broker_nats import NatsPart
from burst import Burst
from cluster import ClusterPart
from context import Context
from delivery import Delivery, bullmq_missing, bullmq_versions
from destination import Sink
from growth import Growth
from ingest import Ingest, wrk_version
from latency import Latency
from observability import Observability
from outbound_rate import OutboundRate
from redisdb import flush, redis_server, sibling_url
from tracing import Tracing

PARTS = (
    "ingest",
    "delivery",
    "latency",
    "growth",
    "cluster",
    "observability",
    "tracing",
    "rate-limit",
    "amqp",
    "nats",
    "mqtt",
)


def check_prerequisites(need_wrk: bool, need_pyspy: bool, need_arq: bool = True) -> str | None:
    """Exit with instructions if something is missing; return py-spy's path.
    arq is needed by the delivery part only (its peer)."""
    missing = []
    if need_wrk and shutil.which("wrk") is None:
        missing.append("wrk (HTTP load generator): apt-get update && apt-get install -y wrk")
    modules = ["arq"] if need_arq else []
    modules += ["aiohttp", "httpx", "uvicorn", "litestar", "redis", "msgspec"]
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        missing.append(
            f"Python packages {', '.join(absent)}: "
            f"{sys.executable} -m pip install -r bench/requirements.txt (make bench does this)"
        )
    pyspy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if need_pyspy and pyspy is None:
        missing.append(f"py-spy for --profile: {sys.executable} -m pip install py-spy")
    if missing:
        print("bench: missing prerequisites:\n  - " + "\n  - ".join(missing), file=sys.stderr)
        sys.exit(2)
    return pyspy


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--only",
        choices=PARTS,
        nargs="+",
        help="run these parts only (default: all)",
    )
    p.add_argument("--rounds", type=int, default=1, help="ingest rounds, interleaved (median)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument(
        "--burst", type=int, default=1000, help="connections of the ingest burst (default 1000)"
    )
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per server")
    p.add_argument("-n", type=int, default=5000, help="messages per delivery run (default 5000)")
    p.add_argument("--keys", type=int, nargs="+", default=[1000, 1], help="wa_ids per run")
    p.add_argument(
        "--delivery-rounds", type=int, default=1, help="runs per delivery case, latency rounds"
    )
    p.add_argument(
        "--observability-n",
        type=int,
        help="messages per delivery run of the observability and tracing parts (default 4 x -n)",
    )
    p.add_argument("--timeout", type=float, default=180, help="seconds any delivery run may take")
    p.add_argument("--profile", action="store_true", help="also profile the router with py-spy")
    p.add_argument("--docs", action="store_true", help="rewrite the table in docs/benchmarks.md")
    p.add_argument("--router-src", help="run the router from this source tree (A/B of a change)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.router_src:
        procs.set_router_src(args.router_src)
    parts = set(args.only or PARTS)
    ingest_on, delivery_on = "ingest" in parts, "delivery" in parts
    pyspy = check_prerequisites(
        bool(parts & {"ingest", "growth", "cluster", "observability", "tracing"}),
        args.profile,
        need_arq=delivery_on,
    )
    if delivery_on and (why := bullmq_missing()):
        procs.say(f"BullMQ peer skipped: {why}")
    node_note = bullmq_versions() if delivery_on and not bullmq_missing() else None
    procs.RESULTS.mkdir(parents=True, exist_ok=True)
    logs = procs.RESULTS / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    running = procs.Procs(logs)
    started = datetime.now(UTC)
    ingest = delivery = latency = growth = cluster = observability = outbound = None
    amqp = None
    brokers: list[NatsPart | MqttPart] = []
    tracing: Tracing | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp_text:
            tmp = Path(tmp_text)
            with redis_server(tmp) as (redis_url, redis_note):
                note = report.machine_note(redis_note, wrk_version(), node_note)
                procs.say(note)
                flush(redis_url)
                sibling_url(redis_url)  # a bad BENCH_REDIS_REFERENCE_DB stops the run now
                sink = Sink(running)
                ctx = Context(args, running, redis_url, tmp, sink, pyspy)
                if ingest_on:
                    ingest = Ingest(ctx, burst=Burst(ctx))
                    ingest.run()
                if delivery_on:
                    delivery = Delivery(ctx)
                    delivery.run()
                if "latency" in parts:
                    latency = Latency(ctx, rounds=args.delivery_rounds)
                    latency.run()
                if "growth" in parts:
                    growth = Growth(ctx)
                    growth.run()
                if "cluster" in parts:
                    cluster = ClusterPart(ctx)
                    cluster.run()
                if "observability" in parts:
                    observability = Observability(ctx)
                    observability.run()
                if "tracing" in parts:
                    tracing = Tracing(ctx)
                    tracing.run()
                if "rate-limit" in parts:
                    outbound = OutboundRate(ctx)
                    outbound.run()
                if "amqp" in parts:
                    amqp = BrokerAmqp(ctx)
                    amqp.run()
                for part, make in (("nats", NatsPart), ("mqtt", MqttPart)):
                    if part in parts:
                        brokers.append(make(ctx))
                        brokers[-1].run()
                if args.profile:
                    if ingest is not None:
                        ingest.profile()
                    if delivery is not None:
                        delivery.profile()
                running.stop_all()
                flush(redis_url)
    finally:
        running.stop_all()
    took = (datetime.now(UTC) - started).total_seconds()
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    head = report.header(f"{started:%Y-%m-%d %H:%M}", command, took, note, report.cpu_idle())
    more = (latency.report_lines() if latency else []) + (growth.report_lines() if growth else [])
    more += cluster.report_lines() if cluster else []
    more += observability.report_lines() if observability else []
    more += tracing.report_lines() if tracing else []
    more += outbound.report_lines() if outbound else []
    more += amqp.report_lines() if amqp else []
    for broker in brokers:
        more += broker.report_lines()
    text = report.report(ctx, ingest, delivery, head, more)
    rows = (report.ingest_chart_rows(ingest) if ingest and ingest.results else []) + (
        delivery.chart_rows() if delivery and delivery.results else []
    )
    rows += cluster.chart_rows() if cluster and cluster.runs else []
    rows += observability.chart_rows() if observability else []
    rows += tracing.chart_rows() if tracing else []
    targets = {row[0]: 1.0 for row in rows if row[0].startswith("ingest")}
    targets.update(delivery.chart_targets() if delivery and delivery.results else {})
    targets.update(cluster.chart_targets() if cluster and cluster.runs else {})
    targets.update(observability.chart_targets() if observability else {})
    svg = procs.RESULTS / "ratios.svg"
    if rows:
        chart.write_svg(
            rows,
            svg,
            title=f"The router beside its floors and peers ({started:%Y-%m-%d}, ratio to floor)",
            targets=targets,
            note="Each bar: rate over the case's floor (the line at 1.0); red tick: the target.",
        )
    print(text)
    latest = procs.RESULTS / "latest.md"
    latest.write_text(text)
    if args.docs and ctx.problems:
        procs.say(f"problems found, {report.DOCS.name} left as it was")
    elif args.docs:
        report.update_docs(text.split("## Profiles")[0])
        if rows:
            shutil.copyfile(svg, report.DOCS.with_suffix(".svg"))
    procs.say(f"wrote {latest}")
    return 1 if ctx.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
