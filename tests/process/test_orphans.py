"""A destination removed from routes.yaml while it still holds messages (an
orphan), handled with the `router` command as a real process: its dead
letters listed, replayed into a configured destination and purged; its
queued messages moved or purged; a move stopped halfway completed once
(on one Redis and across the slots of a Redis Cluster)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from redis import Redis

from router.queue.keys import DestinationKeys, move_key
from tests.support.bot import Bot
from tests.support.cluster import sync_client
from tests.support.processes import run_cli
from tests.support.queues import ERROR, build_queue, lane
from tests.support.routes import STORE, write_yaml

SLACK, CHATBOT = DestinationKeys("slack"), DestinationKeys("chatbot")


def _routes(tmp_path: Path, bot: Bot) -> str:
    """routes.yaml with chatbot and audit: slack was removed from it."""
    return str(
        write_yaml(
            tmp_path,
            f"""
            routes:
              - path: {STORE}
                destinations: [chatbot]
                fields: {{mensaje: string, wa_id: string}}
            destinations:
              chatbot: {{plugin: chatbot, url: "{bot.url}", ordering_key: wa_id}}
              audit: {{plugin: chatbot, url: "{bot.url}", ordering_key: wa_id}}
            """,
        )
    )


def _deliver(routes: str, url: str) -> None:
    done = run_cli("--routes", routes, "worker", "--burst", REDIS_URL=url)
    assert done.returncode == 0, done.stderr


def test_an_orphans_dead_letters_are_listed_replayed_into_a_destination_and_purged(
    tmp_path: Path, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    ids = build_queue(
        clean_redis, "slack", dead={"u1": ["d1", "d2"], "u2": ["d3"]}, queued={"u1": ["q1"]}
    )
    routes = _routes(tmp_path, bot)

    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli("--routes", routes, *args, REDIS_URL=clean_redis)
        return done.returncode, done.stdout, done.stderr

    # Listed as a table: key, message id, attempts, when (local time, age), error.
    code, out, err = cli("dead", "list", "slack")
    assert code == 0, err
    row = next(line for line in out.splitlines() if ids["d1"] in line)
    assert row.split()[:3] == ["u1", ids["d1"], "1"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\S+ ago\)", row)
    assert "HTTP 500" in row and "dead_at" not in out
    # --json: one line per letter, as scripts read it.
    code, out, err = cli("dead", "list", "slack", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["key"], d["envelope"]["id"]) for d in lines] == [
        ("u1", ids["d1"]),
        ("u1", ids["d2"]),
        ("u2", ids["d3"]),
    ]
    assert lines[0]["error"] == ERROR and lines[0]["dead_at"] > 0

    # Replayed where nothing delivers: refused, with the way out.
    code, _, err = cli("dead", "replay", "slack")
    assert code == 2 and "--into" in err and "orphaned" in err
    code, _, err = cli("dead", "replay", "slack", "--into", "sms")
    assert code == 2 and "'sms'" in err and "chatbot" in err

    # Into chatbot: the oldest two, in their order, then its queued one.
    code, out, err = cli("dead", "replay", "slack", "--into", "chatbot", "--count", "2")
    assert code == 0, err
    assert "replayed 2 dead letter(s) of slack into chatbot" in out
    code, out, err = cli("orphan", "move", "slack", "--into", "chatbot")
    assert code == 0, err
    assert "moved 1 queued message(s) of slack into chatbot" in out
    assert lane(redis, CHATBOT, "u1") == ["d1", "d2", "q1"]
    assert lane(redis, SLACK, "u1") == []
    _deliver(routes, clean_redis)
    assert bot.acked_messages("u1") == ["d1", "d2", "q1"]
    [d1] = bot.attempts_of("d1")
    assert d1.headers["idempotency-key"] == ids["d1"]  # the same message, the same id

    # The last one purged: slack holds nothing, and is no longer listed.
    code, out, err = cli("dead", "purge", "slack")
    assert code == 0, err
    assert "purged 1 dead letter(s) of slack" in out
    code, out, err = cli("dead", "list", "slack")
    assert code == 0 and "no dead letters in slack" in out
    code, out, err = cli("status", "--json")
    assert code == 0 and "slack" not in json.loads(out)
    # A name never configured is still unknown.
    code, _, err = cli("dead", "list", "nope")
    assert code == 2 and "no destination named 'nope'" in err


def test_an_orphans_queue_is_purged_only_when_asked(
    tmp_path: Path, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    build_queue(clean_redis, "slack", queued={"a": ["a1", "a2"], "b": ["b1"]}, dead={"c": ["c1"]})
    routes = _routes(tmp_path, bot)
    refused = run_cli("--routes", routes, "orphan", "purge", "chatbot", REDIS_URL=clean_redis)
    assert refused.returncode == 2 and "chatbot is in routes.yaml" in refused.stderr
    done = run_cli("--routes", routes, "orphan", "purge", "slack", REDIS_URL=clean_redis)
    assert done.returncode == 0, done.stderr
    assert "purged 3 queued message(s) of slack" in done.stdout
    assert lane(redis, SLACK, "a") == [] and lane(redis, SLACK, "b") == []
    assert redis.llen(SLACK.ready) == 0 and redis.zcard(SLACK.heads) == 0
    assert int(redis.hget(SLACK.counts, "messages")) == 0
    assert redis.llen(SLACK.dead) == 1  # dead letters stay: `router dead purge`


def _break_counts(client: Redis, keys: DestinationKeys) -> dict[bytes, bytes]:
    """Make the source's step of a move fail before it changes anything (its
    first write, to `counts`, meets a string): as if the process died
    between the copy into the target and the removal from the source."""
    saved = client.hgetall(keys.counts)
    client.delete(keys.counts)
    client.set(keys.counts, "broken by the test")
    return saved


def _mend_counts(client: Redis, keys: DestinationKeys, saved: dict[bytes, bytes]) -> None:
    client.delete(keys.counts)
    client.hset(keys.counts, mapping=saved)


def test_a_move_stopped_between_copy_and_removal_completes_once_when_run_again(
    tmp_path: Path, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    _stopped_move_completes_once(tmp_path, bot, redis, clean_redis)


def test_on_a_cluster_a_stopped_move_across_slots_completes_once(
    tmp_path: Path, bot: Bot, cluster_url: str
) -> None:
    """The same where the two destinations live in different slots (on
    different masters), so that each step is a script on its own node."""
    client = sync_client(cluster_url)
    try:
        assert client.keyslot(SLACK.tag) != client.keyslot(CHATBOT.tag)  # type: ignore[attr-defined]
        _stopped_move_completes_once(tmp_path, bot, client, cluster_url)
    finally:
        client.close()


def _stopped_move_completes_once(tmp_path: Path, bot: Bot, redis: Redis, url: str) -> None:
    texts = [f"m{i}" for i in range(5)]
    build_queue(url, "slack", queued={"u": texts}, dead={"v": ["v1", "v2"]})
    routes = _routes(tmp_path, bot)

    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli("--routes", routes, *args, REDIS_URL=url)
        return done.returncode, done.stdout, done.stderr

    for command, key, sent, said in (
        (("orphan", "move", "slack", "--into", "chatbot"), "u", texts, "moved 5 queued"),
        (("dead", "replay", "slack", "--into", "chatbot"), "v", ["v1", "v2"], "replayed 2 dead"),
    ):
        saved = _break_counts(redis, SLACK)
        code, _, err = cli(*command)
        assert code == 1 and "WRONGTYPE" in err
        # Stopped halfway: copied, not yet removed; the move is remembered.
        assert lane(redis, CHATBOT, key) == sent
        assert redis.exists(move_key("slack"))
        # Until it completes, no move of the same messages goes elsewhere.
        elsewhere = [*command[:-1], "audit"]
        code, _, err = cli(*elsewhere)
        assert code == 2 and "did not finish" in err and "into chatbot" in err
        _mend_counts(redis, SLACK, saved)

        code, out, err = cli(*command)
        assert code == 0, err
        assert said in out  # each left the source now
        assert lane(redis, CHATBOT, key) == sent  # not copied twice
        assert lane(redis, SLACK, key) == []
        assert not redis.exists(move_key("slack")) and not redis.exists(CHATBOT.moved)

    assert redis.llen(SLACK.dead) == 0
    assert int(redis.hget(SLACK.counts, "moved")) == 7
    _deliver(routes, url)
    assert bot.acked_messages("u") == texts and bot.acked_messages("v") == ["v1", "v2"]
    assert len(bot.received) == 7
