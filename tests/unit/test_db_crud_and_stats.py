"""CRUD statement builders and the pool meter (no I/O)."""

from __future__ import annotations

import pytest

from iogate.databases._crud import (
    build_delete,
    build_insert,
    build_update,
    build_upsert,
    quote_ident,
)
from iogate.databases.stats import WAIT_SAMPLES, PoolMeter
from iogate.errors import QueryError


def test_identifiers_are_quoted_part_by_part() -> None:
    assert quote_ident("users") == '"users"'
    assert quote_ident("app.users") == '"app"."users"'
    assert quote_ident('we"ird') == '"we""ird"'
    for bad in ("", "a..b", "nul\x00"):
        with pytest.raises(QueryError):
            quote_ident(bad)


def test_builders_bind_every_value() -> None:
    assert build_insert("t", {"a": 1, "b": "x'"}, ["id"]) == (
        'INSERT INTO "t" ("a", "b") VALUES (?, ?) RETURNING "id"',
        [1, "x'"],
    )
    assert build_insert("t", {}, "*") == ('INSERT INTO "t" DEFAULT VALUES RETURNING *', [])
    assert build_update("t", {"a": 2}, {"id": 7, "gone": None}, None) == (
        'UPDATE "t" SET "a" = ? WHERE "id" = ? AND "gone" IS NULL',
        [2, 7],
    )
    assert build_delete("t", {"id": 7}, ["a"]) == (
        'DELETE FROM "t" WHERE "id" = ? RETURNING "a"',
        [7],
    )
    assert build_upsert("t", {"id": 1, "a": 2}, ["id"], None) == (
        'INSERT INTO "t" ("id", "a") VALUES (?, ?)'
        ' ON CONFLICT ("id") DO UPDATE SET "a" = excluded."a"',
        [1, 2],
    )
    assert build_upsert("t", {"id": 1}, ["id"], None)[0].endswith("DO NOTHING")


def test_builders_refuse_whole_table_changes_and_bad_keys() -> None:
    with pytest.raises(QueryError, match="where"):
        build_update("t", {"a": 1}, {}, None)
    with pytest.raises(QueryError, match="where"):
        build_delete("t", {}, None)
    with pytest.raises(QueryError, match="key"):
        build_upsert("t", {"a": 1}, "a", None)
    with pytest.raises(QueryError, match="not in data"):
        build_upsert("t", {"a": 1}, ["id"], None)


def test_pool_meter_counts_and_p99() -> None:
    meter = PoolMeter()
    assert meter.snapshot(size=2, max_size=4).acquire_wait_p99_s == 0.0
    for i in range(100):
        meter.acquiring()
        meter.acquired(i / 1000)
    meter.acquiring()  # one still waiting
    stats = meter.snapshot(size=4, max_size=4)
    assert (stats.in_use, stats.idle, stats.waiting, stats.acquired_total) == (4, 0, 1, 100)
    assert stats.acquire_wait_p99_s == pytest.approx(0.098)
    meter.abandoned()
    for _ in range(100):
        meter.released()
    assert meter.snapshot(size=4, max_size=4).in_use == 0
    for _ in range(WAIT_SAMPLES):  # the ring keeps only recent waits
        meter.acquiring()
        meter.acquired(0.0)
    assert meter.wait_p99() == 0.0
