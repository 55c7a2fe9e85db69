"""The SQL interface on both engines (real SQLite files and a real PostgreSQL
cluster): transactions, savepoints, batches, execute_many, streams, CRUD,
statistics and the query cache hook."""

from __future__ import annotations

import pytest

from iogate.databases.base import QueryResult, SQLDatabase
from iogate.databases.transactions import Transaction
from iogate.errors import IntegrityError, OperationError, QueryError, ReadOnlyViolation
from tests.integration import db_fixtures

sqldb = db_fixtures.sqldb

SEED = [(1, "ann", 100), (2, "bob", 50)]


async def _seed(db: SQLDatabase) -> None:
    await db.execute_many("INSERT INTO accounts (id, owner, balance) VALUES (?, ?, ?)", SEED)


async def _balances(db: SQLDatabase) -> dict[str, int]:
    rows = await db.fetch("SELECT owner, balance FROM accounts ORDER BY id")
    return {r[0]: r[1] for r in rows}


async def test_transaction_commits_on_success(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    async with sqldb.transaction() as tx:
        await tx.execute(
            "UPDATE accounts SET balance = balance - 30 WHERE owner = :o", {"o": "ann"}
        )
        await tx.execute(
            "UPDATE accounts SET balance = balance + 30 WHERE owner = :o", {"o": "bob"}
        )
        assert await tx.fetch_val("SELECT balance FROM accounts WHERE owner = 'ann'") == 70
    assert await _balances(sqldb) == {"ann": 70, "bob": 80}


async def test_failing_statement_inside_a_transaction_leaves_no_partial_writes(
    sqldb: SQLDatabase,
) -> None:
    await _seed(sqldb)

    async def transfer() -> None:
        async with sqldb.transaction() as tx:
            await tx.execute("UPDATE accounts SET balance = balance + 500 WHERE owner = 'bob'")
            await tx.execute("INSERT INTO accounts (id, owner, balance) VALUES (3, 'cy', 1)")
            await tx.execute("UPDATE accounts SET balance = balance - 500 WHERE owner = 'ann'")

    with pytest.raises(IntegrityError) as caught:
        await transfer()
    assert caught.value.constraint is not None
    assert "balance_nonneg" in caught.value.constraint or "CHECK" in str(caught.value)
    assert await _balances(sqldb) == {"ann": 100, "bob": 50}
    # The connection went back clean: the next write commits normally.
    await sqldb.execute("UPDATE accounts SET note = 'ok' WHERE id = 1")
    assert await sqldb.fetch_val("SELECT note FROM accounts WHERE id = 1") == "ok"
    assert sqldb.stats().in_use == 0


async def test_an_exception_in_the_block_rolls_back(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)

    async def change_of_mind() -> None:
        async with sqldb.transaction() as tx:
            await tx.execute("DELETE FROM accounts")
            raise LookupError("caller changed its mind")

    with pytest.raises(LookupError):
        await change_of_mind()
    assert await sqldb.fetch_val("SELECT count(*) FROM accounts") == 2


async def test_nested_savepoint_undoes_only_its_own_statements(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    async with sqldb.transaction() as tx:
        await tx.execute("UPDATE accounts SET note = 'outer' WHERE id = 1")
        with pytest.raises(IntegrityError):
            await _failing_savepoint(tx)
        async with tx.transaction() as kept:
            await kept.execute("UPDATE accounts SET balance = 1 WHERE id = 2")
    rows = await sqldb.fetch("SELECT id, note, balance FROM accounts ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "outer", 100), (2, None, 1)]


async def _failing_savepoint(tx: Transaction) -> None:
    async with tx.transaction() as inner:
        await inner.execute("UPDATE accounts SET note = 'inner' WHERE id = 2")
        await inner.execute("INSERT INTO accounts (id, owner, balance) VALUES (9, 'ann', 0)")


async def test_read_only_transaction_is_enforced_by_the_engine(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    async with sqldb.transaction(read_only=True) as tx:
        assert await tx.fetch_val("SELECT count(*) FROM accounts") == 2

    async def write_in_read_only() -> None:
        async with sqldb.transaction(read_only=True) as tx:
            await tx.execute("DELETE FROM accounts")

    with pytest.raises(ReadOnlyViolation):
        await write_in_read_only()
    assert await sqldb.fetch_val("SELECT count(*) FROM accounts") == 2
    with pytest.raises(ValueError, match="isolation"):
        sqldb.transaction(isolation="chaotic")


async def test_transactional_batch_is_all_or_nothing(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    with pytest.raises(IntegrityError, match=r"statement 1:"):
        await sqldb.batch(
            [
                ("UPDATE accounts SET balance = 0 WHERE id = ?", [1]),
                ("INSERT INTO accounts (id, owner, balance) VALUES (?, ?, ?)", [5, "bob", 1]),
                "DELETE FROM accounts",
            ]
        )
    assert await _balances(sqldb) == {"ann": 100, "bob": 50}
    results = await sqldb.batch(
        [
            ("UPDATE accounts SET balance = 0 WHERE id = :id", {"id": 1}),
            "SELECT owner FROM accounts ORDER BY id",
        ]
    )
    assert [r.row_count for r in results if isinstance(r, QueryResult)] == [1, 2]


async def test_non_transactional_batch_reports_each_failure_in_place(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    results = await sqldb.batch(
        [
            "UPDATE accounts SET balance = 7 WHERE id = 1",
            "SELECT nosuchcolumn FROM accounts",
            "UPDATE accounts SET balance = 8 WHERE id = 2",
        ],
        transaction=False,
    )
    assert isinstance(results[0], QueryResult)
    assert isinstance(results[1], QueryError)
    assert isinstance(results[2], QueryResult)
    assert await _balances(sqldb) == {"ann": 7, "bob": 8}


async def test_execute_many_is_atomic(sqldb: SQLDatabase) -> None:
    result = await sqldb.execute_many(
        "INSERT INTO accounts (id, owner, balance) VALUES (:id, :owner, 0)",
        [{"id": i, "owner": f"o{i}"} for i in range(100)],
    )
    assert result.rows_affected == 100
    with pytest.raises(IntegrityError):
        await sqldb.execute_many(
            "INSERT INTO accounts (id, owner, balance) VALUES (?, ?, 0)",
            [(1000, "fresh"), (1001, "o5")],  # the second violates UNIQUE(owner)
        )
    assert await sqldb.fetch_val("SELECT count(*) FROM accounts") == 100


async def test_stream_reads_in_chunks_and_gives_the_connection_back(sqldb: SQLDatabase) -> None:
    await sqldb.execute_many(
        "INSERT INTO accounts (id, owner, balance) VALUES (?, ?, ?)",
        [(i, f"o{i}", i) for i in range(1, 2501)],
    )
    async with sqldb.stream("SELECT id, balance FROM accounts ORDER BY id", chunk_rows=100) as rows:
        assert [c.name for c in rows.columns] == ["id", "balance"]
        total = sum([row[1] async for row in rows])
    assert total == sum(range(1, 2501))
    async with sqldb.stream("SELECT id FROM accounts ORDER BY id", chunk_rows=64) as rows:
        sizes = [len(chunk) async for chunk in rows.chunks()]
    assert max(sizes) == 64
    assert sum(sizes) == 2500
    async with sqldb.stream("SELECT id FROM accounts") as rows:
        async for _ in rows:
            break  # leaving early closes the cursor
    assert sqldb.stats().in_use == 0
    with pytest.raises(QueryError):
        await sqldb.stream("SELECT nope FROM accounts").__aenter__()
    assert sqldb.stats().in_use == 0


async def test_crud_helpers_check_identifiers_and_bind_values(sqldb: SQLDatabase) -> None:
    created = await sqldb.insert(
        "accounts", {"id": 1, "owner": "ann", "balance": 10}, returning=["id", "owner"]
    )
    assert created.rows == [(1, "ann")]
    hostile = "x'); DROP TABLE accounts; --"
    await sqldb.insert("accounts", {"id": 2, "owner": hostile, "balance": 0})
    assert await sqldb.fetch_val("SELECT owner FROM accounts WHERE id = 2") == hostile
    updated = await sqldb.update("accounts", {"balance": 11}, where={"owner": "ann"}, returning="*")
    assert updated.row_count == 1
    assert [c.name for c in updated.columns] == ["id", "owner", "balance", "note"]
    upserted = await sqldb.upsert(
        "accounts", {"id": 1, "owner": "ann", "balance": 12}, key=["id"], returning=["balance"]
    )
    assert upserted.rows == [(12,)]
    assert await sqldb.fetch_val("SELECT count(*) FROM accounts") == 2
    nulls = await sqldb.update("accounts", {"note": "n"}, where={"note": None})
    assert nulls.row_count == 2
    deleted = await sqldb.delete("accounts", where={"id": 2}, returning=["owner"])
    assert deleted.rows == [(hostile,)]
    with pytest.raises(QueryError, match="no column"):
        await sqldb.insert("accounts", {'owner" text); DROP TABLE accounts; --': 1})
    with pytest.raises(QueryError, match="no table"):
        await sqldb.insert("nosuch", {"id": 1})
    with pytest.raises(QueryError, match="where"):
        await sqldb.delete("accounts", where={})
    with pytest.raises(IntegrityError):
        await sqldb.insert("accounts", {"id": 3, "owner": "ann", "balance": 0})
    # A column added at run time is found (the cached schema is refreshed once).
    await sqldb.execute("ALTER TABLE accounts ADD COLUMN tag TEXT")
    await sqldb.update("accounts", {"tag": "t"}, where={"id": 1})
    assert await sqldb.fetch_val("SELECT tag FROM accounts WHERE id = 1") == "t"


async def test_stats_count_acquisitions(sqldb: SQLDatabase) -> None:
    before = sqldb.stats()
    for _ in range(5):
        await sqldb.fetch_val("SELECT 1")
    after = sqldb.stats()
    assert after.acquired_total >= before.acquired_total + 5
    assert (after.in_use, after.waiting) == (0, 0)
    assert after.size >= 1
    assert after.idle == after.size
    assert after.acquire_wait_p99_s >= 0.0


async def test_fetch_reads_through_the_cache(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)
    sql = "SELECT owner FROM accounts WHERE balance > :b ORDER BY id"
    first = await sqldb.fetch(sql, {"b": 0}, cache_ttl_s=60)
    cached = await sqldb.fetch(sql, {"b": 0}, cache_ttl_s=60)
    assert cached is first  # a hit: the cached list itself
    assert [r[0] for r in cached] == ["ann", "bob"]
    await sqldb.execute("DELETE FROM accounts")  # a write through iogate invalidates it
    assert await sqldb.fetch(sql, {"b": 0}, cache_ttl_s=60) == []
    assert await sqldb.fetch(sql, {"b": 1}, cache_ttl_s=60) == []  # other params, other key
    with pytest.raises(ValueError, match="reads"):
        await sqldb.fetch("DELETE FROM accounts", cache_ttl_s=60)
    with pytest.raises(ValueError, match="cache_ttl"):
        await sqldb.fetch(sql, {"b": 0}, cache_ttl_s=0)


async def test_run_in_transaction_commits_and_passes_errors_through(sqldb: SQLDatabase) -> None:
    await _seed(sqldb)

    async def move(tx: Transaction) -> int:
        await tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
        await tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
        return int(await tx.fetch_val("SELECT balance FROM accounts WHERE id = 2"))

    assert await sqldb.run_in_transaction(move) == 60
    calls = 0

    async def broken(tx: Transaction) -> None:
        nonlocal calls
        calls += 1
        raise OperationError("not transient")

    with pytest.raises(OperationError):
        await sqldb.run_in_transaction(broken, retries=3)
    assert calls == 1  # only TransientDatabaseError re-runs a transaction
