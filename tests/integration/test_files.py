"""FileStore on the real file system: confinement, atomic writes, limits, streaming."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iogate.files import (
    FileConflictError,
    FileMissingError,
    FileStore,
    FileTooLargeError,
    PathEscapeError,
    UnsafePathError,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    async with FileStore(tmp_path / "base", max_file_bytes=1 << 20, chunk_bytes=4096) as files:
        yield files


def _outside_snapshot(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


async def test_read_write_append_stat_list_copy_move_delete(store: FileStore) -> None:
    assert await store.write_text("notes/a.txt", "hello") == 5
    assert await store.read_text("notes/a.txt") == "hello"
    assert await store.append_text("notes/a.txt", " world") == 11
    assert await store.read_bytes("notes/a.txt") == b"hello world"
    info = await store.stat("notes/a.txt")
    assert (info.path, info.kind, info.size_bytes) == ("notes/a.txt", "file", 11)
    assert await store.copy("notes/a.txt", "notes/b.txt") == 11
    await store.move("notes/b.txt", "archive/c.txt")
    assert [e.path for e in await store.list("notes")] == ["notes/a.txt"]
    assert [(e.path, e.kind) for e in await store.list()] == [
        ("archive", "directory"),
        ("notes", "directory"),
    ]
    assert await store.read_text("archive/c.txt") == "hello world"
    assert await store.delete("archive/c.txt") is True
    assert await store.delete("archive/c.txt", missing_ok=True) is False
    assert await store.delete("archive") is True
    assert not await store.exists("archive")
    with pytest.raises(FileMissingError):
        await store.read_bytes("archive/c.txt")
    with pytest.raises(FileConflictError):
        await store.delete("notes")  # not empty


async def test_overwrite_false_refuses_existing_targets(store: FileStore) -> None:
    await store.write_bytes("x", b"1")
    with pytest.raises(FileConflictError):
        await store.write_bytes("x", b"2", overwrite=False)
    await store.write_bytes("y", b"3")
    with pytest.raises(FileConflictError):
        await store.move("y", "x", overwrite=False)
    assert await store.read_bytes("x") == b"1"
    assert await store.read_bytes("y") == b"3"
    assert [e.path for e in await store.list()] == ["x", "y"]  # no temporary file left


@pytest.mark.parametrize(
    "bad", ["../x", "a/../../x", "/etc/passwd", "a\x00b", "..", "a\\..\\b", ""]
)
async def test_unsafe_paths_are_refused_before_any_io(
    store: FileStore, tmp_path: Path, bad: str
) -> None:
    before = _outside_snapshot(tmp_path)
    with pytest.raises(UnsafePathError):
        await store.write_bytes(bad, b"pwned")
    with pytest.raises((UnsafePathError, FileConflictError)):
        await store.read_bytes(bad)
    assert _outside_snapshot(tmp_path) == before


async def test_symlinks_escaping_the_base_are_refused(store: FileStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    base = tmp_path / "base"
    os.symlink("/etc", base / "etc")
    os.symlink(outside, base / "out")
    os.symlink(outside / "secret", base / "secret-link")
    os.symlink(outside / "new-file", base / "dangling")
    for path in ("etc/passwd", "out/secret", "secret-link", "dangling"):
        with pytest.raises(PathEscapeError):
            await store.read_bytes(path)
        with pytest.raises(PathEscapeError):
            await store.write_bytes(path, b"pwned")
        with pytest.raises(PathEscapeError):
            await store.append_bytes(path, b"pwned")
        with pytest.raises(PathEscapeError):
            await store.delete(path)
    assert (outside / "secret").read_text() == "top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert os.path.islink(base / "etc")


async def test_symlinks_inside_the_base_are_followed(store: FileStore, tmp_path: Path) -> None:
    await store.write_text("real/file.txt", "inside")
    os.symlink("real", tmp_path / "base" / "alias")
    assert await store.read_text("alias/file.txt") == "inside"


async def test_a_component_swapped_for_a_symlink_after_resolution_is_refused(
    store: FileStore, tmp_path: Path
) -> None:
    from iogate.files._paths import open_parent, resolve_beneath, split_relative

    await store.write_text("dir/file", "x")
    base_real = os.path.realpath(tmp_path / "base")
    parts = resolve_beneath(base_real, split_relative("dir/file"), "dir/file")
    # the race: after the check, "dir" becomes a symlink to /etc
    os.rename(tmp_path / "base" / "dir", tmp_path / "base" / "moved")
    os.symlink("/etc", tmp_path / "base" / "dir")
    base_fd = os.open(base_real, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(PathEscapeError):
            open_parent(base_fd, parts, "dir/file")
    finally:
        os.close(base_fd)


async def test_size_limit_leaves_the_old_content(store: FileStore) -> None:
    await store.write_bytes("big", b"old")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b"x" * 4096  # 1.2 MB > 1 MiB

    with pytest.raises(FileTooLargeError) as info:
        await store.write_stream("big", chunks())
    assert info.value.limit_bytes == 1 << 20
    assert await store.read_bytes("big") == b"old"
    with pytest.raises(FileTooLargeError):
        await store.append_bytes("big", b"y" * (1 << 20))
    assert [e.path for e in await store.list()] == ["big"]


async def test_a_failing_stream_leaves_no_trace(store: FileStore, tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.write_stream("f", broken())
    assert os.listdir(tmp_path / "base") == []


async def test_concurrent_writers_never_tear_a_file(store: FileStore) -> None:
    writers = 40
    size = 200_000  # 49 chunks of 4 KiB each: many interleaving points

    async def write(i: int) -> None:
        payload = bytes([i]) * size

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, size, 4096):
                yield payload[start : start + 4096]
                await asyncio.sleep(0)

        await store.write_stream("shared.bin", chunks())

    await asyncio.gather(*(write(i) for i in range(writers)))
    final = await store.read_bytes("shared.bin")
    assert len(final) == size
    assert final == bytes([final[0]]) * size  # exactly one writer's content
    assert [e.path for e in await store.list()] == ["shared.bin"]


async def test_fifo_is_refused_without_hanging(store: FileStore, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "base" / "pipe")
    with pytest.raises(FileConflictError):
        await store.read_bytes("pipe")
    with pytest.raises(FileConflictError):
        await store.append_bytes("pipe", b"x")


async def test_streamed_read_in_chunks(store: FileStore) -> None:
    data = os.urandom(10_000)
    await store.write_bytes("r", data)
    reader = await store.open_read("r")
    assert reader.size_bytes == 10_000
    chunks = [c async for c in reader]
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    assert b"".join(chunks) == data
