import asyncio

import pytest

from iogate.databases.redis import RedisDatabase
from iogate.errors import InvalidInputError, QueryError, TransientDatabaseError
from tests.servers import RedisServer, free_port


async def test_commands_on_a_real_server(redis: RedisServer) -> None:
    async with RedisDatabase("cache", url=redis.url) as db:
        await db.ping()
        assert await db.command("SET", "iogate:k", "v", "EX", 60) is True
        assert await db.command("GET", "iogate:k") == b"v"
        assert 0 < await db.command("TTL", "iogate:k") <= 60
        assert await db.command("INCR", "iogate:n") == 1
        with pytest.raises(QueryError):
            await db.command("INCR", "iogate:k")  # not an integer
        with pytest.raises(QueryError):
            await db.command("NOSUCHCOMMAND")


async def test_unreachable_server_is_transient() -> None:
    database = RedisDatabase("cache", url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(TransientDatabaseError):
        await database.open()


async def test_typed_helpers(redis: RedisServer) -> None:
    async with RedisDatabase("cache", url=redis.url) as db:
        assert await db.set("iogate:h:a", "1", ttl_s=30) is True
        assert await db.get("iogate:h:a") == b"1"
        assert 0 < await db.command("PTTL", "iogate:h:a") <= 30_000
        assert await db.set("iogate:h:a", "2", only_if_absent=True) is False
        assert await db.incr("iogate:h:n", 5) == 5
        assert await db.incr("iogate:h:n") == 6
        await db.mset({"iogate:h:x": "x", "iogate:h:y": b"\xff"})
        assert await db.mget(["iogate:h:x", "iogate:h:y", "iogate:h:none"]) == [b"x", b"\xff", None]
        assert await db.expire("iogate:h:x", 0.5) is True
        assert 0 < await db.command("PTTL", "iogate:h:x") <= 500
        assert await db.delete("iogate:h:a", "iogate:h:x", "iogate:h:none") == 2
        assert await db.get("iogate:h:a") is None
        with pytest.raises(ValueError, match="ttl_s"):
            await db.set("iogate:h:a", "1", ttl_s=0)


async def test_pipeline_is_one_round_trip_with_errors_in_place(redis: RedisServer) -> None:
    async with RedisDatabase("cache", url=redis.url) as db:
        replies = await db.pipeline(
            [["SET", "iogate:p:s", "text"], ["INCR", "iogate:p:s"], ["GET", "iogate:p:s"]],
            transaction=True,
        )
        assert replies[0] is True
        assert isinstance(replies[1], QueryError)  # not an integer; the others still ran
        assert replies[2] == b"text"
        assert await db.pipeline([]) == []


async def test_commands_beyond_the_pool_wait_and_are_counted(redis: RedisServer) -> None:
    async with RedisDatabase("cache", url=redis.url, max_connections=2, auto_pipeline=False) as db:
        await db.set("iogate:w", "v")
        results = await asyncio.gather(*(db.get("iogate:w") for _ in range(50)))
        stats = db.stats()
    assert results == [b"v"] * 50
    assert stats.acquired_total >= 51
    assert (stats.in_use, stats.waiting, stats.max_size) == (0, 0, 2)
    assert stats.size <= 2


async def test_concurrent_commands_share_one_pipeline_with_their_own_replies(
    redis: RedisServer,
) -> None:
    async with RedisDatabase("cache", url=redis.url, max_connections=2) as db:
        await db.set("iogate:ap:s", "text")
        await db.set("iogate:ap:n", "41")
        before = db.stats().acquired_total
        results = await asyncio.gather(
            *(db.get("iogate:ap:s") for _ in range(100)),
            db.command("INCR", "iogate:ap:s"),  # WRONGTYPE-like error: this caller only
            db.command("INCR", "iogate:ap:n"),
            return_exceptions=True,
        )
        stats = db.stats()
    assert results[:100] == [b"text"] * 100
    assert isinstance(results[100], QueryError)
    assert results[101] == 42
    # 102 commands issued in one loop iteration: the first goes out at once on its
    # own, the 101 issued while it is in flight follow as one pipeline
    assert stats.acquired_total - before == 2
    assert (stats.in_use, stats.waiting) == (0, 0)


async def test_a_cancelled_caller_leaves_the_pipeline_to_the_others(redis: RedisServer) -> None:
    async with RedisDatabase("cache", url=redis.url) as db:
        await db.set("iogate:ap:c", "v")
        first = asyncio.ensure_future(db.get("iogate:ap:c"))  # goes out at once
        doomed = asyncio.ensure_future(db.get("iogate:ap:c"))  # queued behind it
        others = [asyncio.ensure_future(db.get("iogate:ap:c")) for _ in range(10)]
        await asyncio.sleep(0)  # every call has sent or queued its command
        doomed.cancel()
        assert await asyncio.gather(first, *others) == [b"v"] * 11
        assert doomed.cancelled()
        assert await db.get("iogate:ap:c") == b"v"


async def test_pipelined_callers_see_a_stopped_server_as_transient_errors(
    redis: RedisServer,
) -> None:
    async with RedisDatabase("cache", url=redis.url) as db:
        await db.set("iogate:ap:k", "v")
        await asyncio.to_thread(redis.stop)
        try:
            results = await asyncio.gather(
                *(db.command("GET", "iogate:ap:k") for _ in range(5)), return_exceptions=True
            )
        finally:
            await asyncio.to_thread(redis.start)
        assert all(isinstance(r, TransientDatabaseError) for r in results), results
        assert await db.get("iogate:ap:k") in (b"v", None)  # the server is back


def test_default_allowlist_refuses_administration() -> None:
    db = RedisDatabase("cache", url="redis://127.0.0.1:1/0")
    assert db.check_command("get") == "GET"
    for name in ("FLUSHALL", "flushdb", "CONFIG", "KEYS", "SHUTDOWN", "DEBUG", "EVAL", "ACL"):
        with pytest.raises(InvalidInputError):
            db.check_command(name)
    custom = RedisDatabase("cache", url="redis://127.0.0.1:1/0", allowed_commands=["ping"])
    assert custom.check_command("PING") == "PING"
    with pytest.raises(InvalidInputError):
        custom.check_command("GET")
