"""OpenTelemetry (docs/tracing.md), end to end: a real router process with
OTEL_EXPORTER_OTLP_ENDPOINT set exports its spans to a collector of the
test's own (tests/support/otlp.py) on loopback; the bot is the chatbot
plugin's destination. Without the variable, nothing of OpenTelemetry is
even imported; set without the `otel` extra, the router refuses to start."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx

from tests.support.bot import Answer, Bot
from tests.support.otlp import CLIENT, SERVER, STATUS_ERROR, Collector, Span, serving_collector
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import STORE, write_routes
from tests.support.servers import free_port, wait_until

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"


def _router(tmp_path: Path, redis_url: str, bot: Bot, **env: str) -> RouterProcess:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    return RouterProcess(
        tmp_path / "router.log",
        die_with_parent=True,
        REDIS_URL=redis_url,
        ROUTES_FILE=str(routes),
        **env,
    )


def _stopped(router: RouterProcess) -> None:
    """SIGTERM, and a clean exit (the spans still queued are sent before it)."""
    router.signal(signal.SIGTERM)
    assert router.wait(30) == 0, router.log_tail()


def _one(spans: list[Span], **attributes: object) -> Span:
    found = [s for s in spans if all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (attributes, spans)
    return found[0]


def test_ingest_and_attempt_spans_join_the_senders_trace(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    """The ingest request's span continues the sender's trace; each attempt
    (a failed one, then its retry) is a span under it, and the bot gets the
    attempt's own span as its traceparent. The batch delay is far away: the
    spans reach the collector because stopping sends what is queued."""
    bot.decide = lambda m, n: (
        Answer(status=500) if m.get("mensaje") == "traced" and n == 0 else Answer()
    )
    with serving_collector() as collector:
        router = _router(
            tmp_path,
            clean_redis,
            bot,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_SERVICE_NAME="router-under-test",
            OTEL_BSP_SCHEDULE_DELAY="600000",  # (ms) only the flush at stop sends them
        ).start()
        try:
            headers = {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"}
            traced = httpx.post(
                router.url + STORE, json={"mensaje": "traced", "wa_id": "1"}, headers=headers
            )
            plain = httpx.post(router.url + STORE, json={"mensaje": "plain", "wa_id": "2"})
            assert traced.status_code == plain.status_code == 200
            wait_until(lambda: len(bot.acknowledged()) == 2, what="both delivered")
        finally:
            _stopped(router)
        assert collector.requests >= 1

    traced_id, plain_id = traced.json()["id"], plain.json()["id"]
    ingests = collector.named(f"POST {STORE}")
    attempts = collector.named("deliver chatbot")
    assert {s.service_name for s in ingests + attempts} == {"router-under-test"}

    # The ingest request: a SERVER span, the sender's span its parent.
    ingest = _one(ingests, **{"messaging.message.id": traced_id})
    assert ingest.kind == SERVER
    assert (ingest.trace_id, ingest.parent_span_id) == (SENDER_TRACE, SENDER_SPAN)
    assert ingest.attributes["http.response.status_code"] == 200
    assert ingest.attributes["http.route"] == STORE

    # Its two attempts: CLIENT spans under it, with what the log line says.
    first = _one(attempts, **{"messaging.message.id": traced_id, "router.attempt": 1})
    retry = _one(attempts, **{"messaging.message.id": traced_id, "router.attempt": 2})
    for span in (first, retry):
        assert span.kind == CLIENT
        assert (span.trace_id, span.parent_span_id) == (SENDER_TRACE, ingest.span_id)
        assert span.attributes["messaging.destination.name"] == "chatbot"
        assert span.attributes["messaging.message.conversation_id"] == "1"
        assert span.attributes["router.plugin"] == "chatbot"
        assert span.attributes["router.sequence"] == 1
        assert span.end_ns > span.start_ns
    assert first.attributes["router.outcome"] == "failed"
    assert first.attributes["http.response.status_code"] == 500
    assert first.attributes["error.type"] == "500"
    assert first.status_code == STATUS_ERROR and "500" in first.status_message
    assert retry.attributes["router.outcome"] == "ok"
    assert retry.attributes["http.response.status_code"] == 200
    assert retry.status_code != STATUS_ERROR

    # The bot got each attempt's own span as its parent, and the sender's tracestate.
    sent = bot.attempts_of("traced")
    assert [r.headers["traceparent"] for r in sent] == [
        f"00-{SENDER_TRACE}-{first.span_id}-01",
        f"00-{SENDER_TRACE}-{retry.span_id}-01",
    ]
    assert {r.headers["tracestate"] for r in sent} == {"rojo=00f067aa0ba902b7"}

    # Without a sender's trace: a new one, started by the ingest request.
    plain_ingest = _one(ingests, **{"messaging.message.id": plain_id})
    assert plain_ingest.parent_span_id == "" and plain_ingest.trace_id != SENDER_TRACE
    plain_attempt = _one(attempts, **{"messaging.message.id": plain_id})
    assert plain_attempt.trace_id == plain_ingest.trace_id
    assert plain_attempt.parent_span_id == plain_ingest.span_id
    (received,) = bot.attempts_of("plain")
    assert received.headers["traceparent"].split("-")[1:3] == [
        plain_attempt.trace_id,
        plain_attempt.span_id,
    ]
    assert "tracestate" not in received.headers


def test_a_refused_request_is_a_span_with_its_status(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    """A 400 is on the request's span (not as a server error), and spans
    leave in batches while the router runs (OTEL_BSP_SCHEDULE_DELAY)."""
    with serving_collector() as collector:
        router = _router(
            tmp_path,
            clean_redis,
            bot,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.url + "/v1/traces",
            OTEL_BSP_SCHEDULE_DELAY="50",
        ).start()
        try:
            answer = httpx.post(
                router.url + STORE, json={"wa_id": "1"}, headers={"traceparent": TRACEPARENT}
            )
            assert answer.status_code == 400
            wait_until(lambda: _refused(collector), what="the refused request's span")
        finally:
            _stopped(router)
    (span,) = _refused(collector)
    assert (span.trace_id, span.parent_span_id) == (SENDER_TRACE, SENDER_SPAN)
    assert span.status_code != STATUS_ERROR and "messaging.message.id" not in span.attributes
    assert span.service_name == "message-router"  # OTEL_SERVICE_NAME's default
    assert not collector.named("deliver")


def _refused(collector: Collector) -> list[Span]:
    return [
        s
        for s in collector.named(f"POST {STORE}")
        if s.attributes.get("http.response.status_code") == 400
    ]


def test_tracing_off_imports_nothing_of_opentelemetry(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    """With the endpoint unset (or empty), a router that stores and delivers
    a traced message never loads its spans nor OpenTelemetry's tracing SDK
    or exporter (PYTHONPROFILEIMPORTTIME lists every module the process
    imports), and forwards the sender's traceparent unchanged, as before
    tracing existed. (redis-py 8 and Litestar look for OpenTelemetry on
    their own at import, finding its metrics API and SDK when installed:
    not ours to stop, and the same with the router's tracing off or on.)"""
    router = _router(
        tmp_path,
        clean_redis,
        bot,
        OTEL_EXPORTER_OTLP_ENDPOINT="",
        OTEL_SERVICE_NAME="unused",
        PYTHONPROFILEIMPORTTIME="1",
    ).start()
    try:
        headers = {"traceparent": TRACEPARENT}
        answer = httpx.post(
            router.url + STORE, json={"mensaje": "m", "wa_id": "1"}, headers=headers
        )
        assert answer.status_code == 200
        wait_until(lambda: len(bot.acknowledged()) == 1, what="the delivery")
    finally:
        _stopped(router)
    log = router.log_text()
    imported = set(re.findall(r"^import time: +\d+ \| +\d+ \| +(\S+)$", log, re.MULTILINE))
    assert {"router.delivery.attempt", "router.ops.tracing"} <= imported  # the listing works
    ours = {"router.ops.otel_spans", "opentelemetry.sdk.trace", "opentelemetry.exporter"}
    assert not {m for m in imported if m.startswith(tuple(ours))}
    assert bot.acknowledged()[0].headers["traceparent"] == TRACEPARENT


def test_an_endpoint_without_the_extra_refuses_to_start_naming_the_fix(tmp_path: Path) -> None:
    """OpenTelemetry hidden (an empty `opentelemetry` package first on the
    path, so its modules are not found): one line naming the variable and
    the pip command, exit 2."""
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    result = run_cli(
        "check",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        PYTHONPATH=str(shadow.parent),
    )
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("router: environment error: OTEL_EXPORTER_OTLP_ENDPOINT=")
    assert "pip install 'message-router[otel]'" in line


def test_a_coalesced_request_is_one_attempt_linked_to_every_message(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    """Three messages in one coalesced request, each from its own sender's
    trace: one attempt span, under the first message's ingest span, with a
    link to each other message's."""
    routes = write_routes(tmp_path / "routes.yaml", bot.url, coalesce={"window": "2s"})
    with serving_collector() as collector:
        router = RouterProcess(
            tmp_path / "router.log",
            die_with_parent=True,
            REDIS_URL=clean_redis,
            ROUTES_FILE=str(routes),
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        ).start()
        try:
            traces = [f"{n:032x}" for n in (0xA1, 0xA2, 0xA3)]
            ids = []
            for n, trace in enumerate(traces):
                answer = httpx.post(
                    router.url + STORE,
                    json={"mensaje": f"m{n}", "wa_id": "7"},
                    headers={"traceparent": f"00-{trace}-{SENDER_SPAN}-01"},
                )
                ids.append(answer.json()["id"])
            wait_until(lambda: bot.acknowledged(), what="the coalesced request")
        finally:
            _stopped(router)
    (request,) = bot.received
    assert request.headers["x-router-coalesced"] == "3"
    ingests = {s.attributes["messaging.message.id"]: s for s in collector.named("POST ")}
    (attempt,) = collector.named("deliver chatbot")
    first = ingests[ids[0]]
    assert (attempt.trace_id, attempt.parent_span_id) == (traces[0], first.span_id)
    assert attempt.attributes["messaging.batch.message_count"] == 3
    assert attempt.attributes["router.message_ids"] == ids
    assert [(link.trace_id, link.span_id) for link in attempt.links] == [
        (traces[n], ingests[ids[n]].span_id) for n in (1, 2)
    ]
    assert [link.attributes["messaging.message.id"] for link in attempt.links] == ids[1:]
    assert request.headers["traceparent"] == f"00-{traces[0]}-{attempt.span_id}-01"


def test_a_collector_that_is_down_costs_spans_never_messages(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    """Nothing listens at the endpoint: messages are stored and delivered
    as ever, and the router still stops cleanly (the last spans are given
    up after a bounded wait)."""
    router = _router(
        tmp_path,
        clean_redis,
        bot,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_BSP_SCHEDULE_DELAY="50",
    ).start()
    try:
        for n in range(3):
            answer = httpx.post(router.url + STORE, json={"mensaje": f"m{n}", "wa_id": "1"})
            assert answer.status_code == 200
        wait_until(lambda: len(bot.acknowledged()) == 3, what="three deliveries")
    finally:
        _stopped(router)
    assert bot.acked_messages("1") == ["m0", "m1", "m2"]
