"""Shard tags and the shard of an ordering key are part of the data on
disk: a release that changed them would strand queued messages in tags
nobody reads. Pinned here, with the properties they are chosen for."""

from __future__ import annotations

from redis.crc import key_slot

from router.queue.keys import DestinationKeys, shard_of, shard_share, shard_tag


def test_tags_and_shards_never_change() -> None:
    assert shard_tag("chatbot", 0, 1) == "{rt:chatbot}"
    assert [shard_tag("chatbot", i, 3) for i in range(3)] == [
        "{rt:chatbot:0:1}",
        "{rt:chatbot:1:3}",
        "{rt:chatbot:2}",
    ]
    assert [shard_tag("chatbot", i, 6) for i in range(6)] == [
        "{rt:chatbot:0:13}",
        "{rt:chatbot:1:2}",
        "{rt:chatbot:2:10}",
        "{rt:chatbot:3}",
        "{rt:chatbot:4:3}",
        "{rt:chatbot:5:4}",
    ]
    # CRC32 of the UTF-8 bytes, mod N
    assert [shard_of(k, 6) for k in ("44912345678", "1", "", "ñandú", "a/b")] == [1, 5, 0, 0, 4]
    assert shard_of("anything", 1) == 0


def _master_of(slot: int, masters: int) -> int:
    """Which master `--cluster create` gives a slot (its rounded split points)."""
    per = 16384 / masters
    return next(m for m in range(masters) if slot < round((m + 1) * per))


def test_n_shards_spread_evenly_over_masters_split_as_cluster_create_splits() -> None:
    for masters in (1, 2, 3, 4, 5, 6):
        for multiple in (1, 2, 3):
            shards = masters * multiple
            owners = [
                _master_of(key_slot(shard_tag("d", i, shards)[1:-1].encode()), masters)
                for i in range(shards)
            ]
            assert sorted(owners) == sorted(list(range(masters)) * multiple), (masters, shards)


def test_max_in_flight_parts_add_up_exactly() -> None:
    for total in range(1, 40):
        for shards in range(1, total + 1):
            parts = [shard_share(total, i, shards) for i in range(shards)]
            assert sum(parts) == total and max(parts) - min(parts) <= 1 and min(parts) >= 1


def test_all_keys_of_a_shard_share_its_slot() -> None:
    keys = DestinationKeys("chatbot", 2, 6)
    slot = key_slot(keys.tag.encode())
    for name in (keys.ready, keys.leases, keys.owner, keys.lane("k"), keys.seen("id")):
        assert key_slot(name.encode()) == slot
