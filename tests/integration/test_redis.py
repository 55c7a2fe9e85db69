import pytest

from iogate.databases.redis import RedisDatabase
from iogate.errors import QueryError, TransientDatabaseError
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
