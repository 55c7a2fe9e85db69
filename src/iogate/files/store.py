"""FileStore: non-blocking, sandboxed file operations under one base directory.

>>> async with FileStore("var/files", max_file_bytes=10 * 2**20) as files:   # doctest: +SKIP
...     await files.write_text("notes/today.txt", "hello")
...     print(await files.read_text("notes/today.txt"))

Every system call runs in a worker thread (:func:`anyio.to_thread.run_sync`),
so the event loop never waits on the disk. Paths are confined to the base
directory as described in :mod:`iogate.files._paths`.

Writes are atomic (the pattern of ``atomicwrites`` / ``os.replace`` docs): the
content goes to a hidden temporary file in the same directory, is flushed with
``fsync``, renamed over the target (``rename(2)`` is atomic on POSIX) and the
directory is ``fsync``-ed so the rename survives a power loss. A reader sees
the old content or the new, never a mix, and of many concurrent writers of
one file exactly one writer's content remains. A crash can leave a
``.iogate-*.tmp`` file behind; :meth:`FileStore.list` does not show them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import anyio
from anyio import to_thread

from iogate.files._paths import (
    DIR_FLAGS,
    name_error,
    open_dir,
    open_parent,
    resolve_beneath,
    split_relative,
)
from iogate.files.errors import (
    FileConflictError,
    FileMissingError,
    FileTooLargeError,
    PathEscapeError,
)
from iogate.lifecycle import AsyncResource

__all__ = ["FileInfo", "FileStore"]

T = TypeVar("T")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TMP_PREFIX = ".iogate-"
_TMP_SUFFIX = ".tmp"
DEFAULT_CHUNK_BYTES = 256 * 1024

FileKind = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One entry of the store.

    Attributes:
        path: the path relative to the base directory (``"notes/today.txt"``).
        kind: ``file``, ``directory``, ``symlink`` (only in listings) or ``other``.
        size_bytes: bytes (0 for a directory).
        modified: last modification, seconds since the Unix epoch.
    """

    path: str
    kind: FileKind
    size_bytes: int
    modified: float


def _kind(mode: int) -> FileKind:
    if stat_mod.S_ISREG(mode):
        return "file"
    if stat_mod.S_ISDIR(mode):
        return "directory"
    if stat_mod.S_ISLNK(mode):
        return "symlink"
    return "other"


class FileStore(AsyncResource):
    """Files under ``base_dir``, read and written without blocking the loop.

    Args:
        base_dir: the sandbox; created (with parents) on open. Every path given
            to a method is relative to it.
        max_file_bytes: the largest file a write, append, copy or whole-file
            read accepts (bytes, ≥ 1); streamed reads are not limited.
        chunk_bytes: size of each read and write system call when streaming
            (bytes, 4 KiB .. 64 MiB; default 256 KiB).

    Lifecycle: ``async with FileStore(...) as files`` (or ``open()`` / ``close()``)
    opens a descriptor of the base directory that every path is resolved from.

    Raises (every method): :class:`~iogate.files.errors.UnsafePathError` (400),
    :class:`~iogate.files.errors.PathEscapeError` (403),
    :class:`~iogate.files.errors.FileMissingError` (404),
    :class:`~iogate.files.errors.FileConflictError` (409),
    :class:`~iogate.files.errors.FileTooLargeError` (413); an ``OSError``
    only the name can cause (``ENAMETOOLONG``, ``EILSEQ``) is an
    ``UnsafePathError``; other ``OSError`` (disk full, permissions, I/O)
    propagate unchanged.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        max_file_bytes: int,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        name: str = "files",
    ) -> None:
        super().__init__(name)
        if max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be >= 1, got {max_file_bytes}")
        if not 4096 <= chunk_bytes <= 64 * 2**20:
            raise ValueError(f"chunk_bytes must be within 4096..67108864, got {chunk_bytes}")
        self.base_dir = Path(base_dir)
        self.max_file_bytes = max_file_bytes
        self.chunk_bytes = chunk_bytes
        self._base_real = ""
        self._base_fd = -1

    # -- lifecycle -----------------------------------------------------------

    async def _open(self) -> None:
        def open_base() -> tuple[str, int]:
            os.makedirs(self.base_dir, exist_ok=True)
            real = os.path.realpath(self.base_dir)
            return real, os.open(real, DIR_FLAGS)

        self._base_real, self._base_fd = await to_thread.run_sync(open_base)

    async def _close(self) -> None:
        fd, self._base_fd = self._base_fd, -1
        if fd >= 0:
            os.close(fd)

    def _locate(self, path: str) -> list[str]:
        """Lexical check and symlink resolution (runs in a worker thread)."""
        self._require_open()
        return resolve_beneath(self._base_real, split_relative(path), path)

    async def _run(self, fn: Callable[[], T], path: str) -> T:
        """``fn()`` in a worker thread; an ``OSError`` only the name of ``path``
        can cause (``ENAMETOOLONG``...) becomes an :class:`UnsafePathError`
        (:func:`~iogate.files._paths.name_error`)."""
        try:
            return await to_thread.run_sync(fn)
        except OSError as exc:
            error = name_error(exc, path)
            if error is exc:
                raise
            raise error from exc

    # -- whole-file reads and writes ----------------------------------------

    async def read_bytes(self, path: str) -> bytes:
        """The whole content of a file (at most ``max_file_bytes``)."""
        chunks = [chunk async for chunk in self.iter_bytes(path, limit=True)]
        return b"".join(chunks)

    async def read_text(self, path: str, *, encoding: str = "utf-8") -> str:
        """The whole content of a text file, decoded (``UnicodeDecodeError`` if not)."""
        return (await self.read_bytes(path)).decode(encoding)

    async def write_bytes(self, path: str, data: bytes, *, overwrite: bool = True) -> int:
        """Atomically replace (or create) a file with ``data``; parents are created.
        Returns the bytes written. ``overwrite=False`` refuses an existing file."""
        return await self.write_stream(path, _once(data), overwrite=overwrite)

    async def write_text(
        self, path: str, text: str, *, encoding: str = "utf-8", overwrite: bool = True
    ) -> int:
        """:meth:`write_bytes` of ``text`` encoded."""
        return await self.write_bytes(path, text.encode(encoding), overwrite=overwrite)

    async def append_bytes(self, path: str, data: bytes) -> int:
        """Append ``data`` to a file (created if missing) with ``O_APPEND`` and
        ``fsync``; returns the file's new size. Not atomic like a write: a crash
        may keep part of ``data``.

        Raises:
            FileTooLargeError: the file would exceed ``max_file_bytes``.
        """

        def append() -> int:
            parts = self._locate(path)
            dfd, name = open_parent(self._base_fd, parts, path, create=True)
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                fd = _open_file(name, flags | _NOFOLLOW | _CLOEXEC, dfd, path)
            finally:
                os.close(dfd)
            try:
                size = _require_regular(fd, path).st_size
                if size + len(data) > self.max_file_bytes:
                    raise self._too_large(path)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                return size + len(data)
            finally:
                os.close(fd)

        return await self._run(append, path)

    async def append_text(self, path: str, text: str, *, encoding: str = "utf-8") -> int:
        """:meth:`append_bytes` of ``text`` encoded."""
        return await self.append_bytes(path, text.encode(encoding))

    # -- streaming -------------------------------------------------------------

    async def open_read(self, path: str, *, limit: bool = False) -> FileReader:
        """Open a file for a streamed read: ``reader.size_bytes``, then
        ``async for chunk in reader`` (chunks of ``chunk_bytes``); the
        descriptor is closed when the iteration ends or on ``aclose()``.
        ``limit=True`` refuses a file larger than ``max_file_bytes``."""

        def open_() -> tuple[int, int]:
            parts = self._locate(path)
            dfd, name = open_parent(self._base_fd, parts, path)
            try:
                # O_NONBLOCK: opening a FIFO must not hang a worker thread.
                fd = _open_file(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC, dfd, path)
            finally:
                os.close(dfd)
            try:
                size = _require_regular(fd, path).st_size
            except BaseException:
                os.close(fd)
                raise
            if limit and size > self.max_file_bytes:
                os.close(fd)
                raise self._too_large(path)
            return fd, size

        fd, size = await self._run(open_, path)
        return FileReader(fd, size, self.chunk_bytes)

    async def iter_bytes(self, path: str, *, limit: bool = False) -> AsyncIterator[bytes]:
        """The content of a file in chunks of ``chunk_bytes`` (see :meth:`open_read`)."""
        reader = await self.open_read(path, limit=limit)
        async with reader:
            async for chunk in reader:
                yield chunk

    async def write_stream(
        self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True
    ) -> int:
        """Atomically replace (or create) a file with the concatenated ``chunks``,
        written as they arrive (memory stays within ``chunk_bytes``); parents are
        created. Returns the bytes written. If the stream fails, is cancelled or
        exceeds ``max_file_bytes``, the temporary file is removed and the target
        is untouched.

        Raises:
            FileTooLargeError: the stream passed ``max_file_bytes``.
            FileConflictError: ``overwrite=False`` and the file exists, or the
                path is a directory.
        """

        def open_tmp() -> tuple[int, int, str, str]:
            parts = self._locate(path)
            dfd, name = open_parent(self._base_fd, parts, path, create=True)
            tmp = f"{_TMP_PREFIX}{uuid.uuid4().hex}{_TMP_SUFFIX}"
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
                fd = os.open(tmp, flags, 0o666, dir_fd=dfd)
            except BaseException:
                os.close(dfd)
                raise
            return dfd, fd, name, tmp

        dfd, fd, name, tmp = await self._run(open_tmp, path)
        committed = False
        try:
            total = 0
            buffer = bytearray()
            async for chunk in chunks:
                total += len(chunk)
                if total > self.max_file_bytes:
                    raise self._too_large(path)
                buffer += chunk
                if len(buffer) >= self.chunk_bytes:
                    data, buffer = bytes(buffer), bytearray()
                    await self._run(partial(_write_all, fd, data), path)
            if buffer:
                await self._run(partial(_write_all, fd, bytes(buffer)), path)
            # _commit owns both descriptors from here: closed exactly once, even on failure.
            committed = True
            await self._run(partial(_commit, fd, dfd, tmp, name, path, overwrite), path)
            return total
        finally:
            if not committed:
                with anyio.CancelScope(shield=True):
                    await self._run(partial(_discard, fd, dfd, tmp), path)

    # -- metadata and tree operations ----------------------------------------

    async def stat(self, path: str) -> FileInfo:
        """What is at ``path`` (``""`` is the base directory)."""

        def stat_() -> FileInfo:
            parts = self._locate(path)
            if not parts:
                st = os.fstat(self._base_fd)
            else:
                dfd, name = open_parent(self._base_fd, parts, path)
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    raise FileMissingError("no such file", path=path) from None
                finally:
                    os.close(dfd)
            kind = _kind(st.st_mode)
            size = st.st_size if kind == "file" else 0
            return FileInfo("/".join(parts), kind, size, st.st_mtime)

        return await self._run(stat_, path)

    async def exists(self, path: str) -> bool:
        """Whether anything exists at ``path`` (unsafe paths still raise)."""
        try:
            await self.stat(path)
        except FileMissingError:
            return False
        except FileConflictError:
            return False
        return True

    async def list(self, path: str = "") -> list[FileInfo]:
        """The entries of a directory (not recursive), sorted by name; symlinks
        are listed as ``symlink`` without being followed, temporary files of
        unfinished writes are left out."""

        def list_() -> list[FileInfo]:
            parts = self._locate(path)
            fd = open_dir(self._base_fd, parts, path)
            try:
                entries: list[FileInfo] = []
                prefix = "/".join(parts)
                with os.scandir(fd) as it:
                    for entry in it:
                        if entry.name.startswith(_TMP_PREFIX) and entry.name.endswith(_TMP_SUFFIX):
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed while listing
                        kind = _kind(st.st_mode)
                        rel = f"{prefix}/{entry.name}" if prefix else entry.name
                        size = st.st_size if kind == "file" else 0
                        entries.append(FileInfo(rel, kind, size, st.st_mtime))
            finally:
                os.close(fd)
            return sorted(entries, key=lambda e: e.path)

        return await self._run(list_, path)

    async def delete(self, path: str, *, missing_ok: bool = False) -> bool:
        """Remove a file or an empty directory; ``True`` if something was removed.

        Raises:
            FileMissingError: nothing there and not ``missing_ok``.
            FileConflictError: a directory that is not empty.
        """

        def delete_() -> bool:
            parts = self._locate(path)
            try:
                dfd, name = open_parent(self._base_fd, parts, path)
            except FileMissingError:
                if missing_ok:
                    return False
                raise
            try:
                try:
                    os.unlink(name, dir_fd=dfd)
                except IsADirectoryError:
                    os.rmdir(name, dir_fd=dfd)
                os.fsync(dfd)
            except FileNotFoundError:
                if missing_ok:
                    return False
                raise FileMissingError("no such file", path=path) from None
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileConflictError("the directory is not empty", path=path) from None
                raise
            finally:
                os.close(dfd)
            return True

        return await self._run(delete_, path)

    async def copy(self, src: str, dst: str, *, overwrite: bool = True) -> int:
        """Copy a file, streamed, into an atomic write of ``dst``; returns bytes copied."""
        reader = await self.open_read(src, limit=True)
        async with reader:
            return await self.write_stream(dst, reader, overwrite=overwrite)

    async def move(self, src: str, dst: str, *, overwrite: bool = True) -> None:
        """Rename a file or directory (atomic within the base's file system);
        parents of ``dst`` are created. ``overwrite=False`` refuses an existing
        ``dst`` atomically for files (``link(2)`` then ``unlink(2)``)."""

        def move_() -> None:
            src_parts, dst_parts = self._locate(src), self._locate(dst)
            sfd, sname = open_parent(self._base_fd, src_parts, src)
            try:
                dfd, dname = open_parent(self._base_fd, dst_parts, dst, create=True)
                try:
                    _rename(sfd, sname, dfd, dname, src, dst, overwrite)
                    os.fsync(dfd)
                    os.fsync(sfd)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)

        await self._run(move_, dst)  # src exists: only dst's name can be refused

    def _too_large(self, path: str) -> FileTooLargeError:
        return FileTooLargeError(
            f"the file exceeds the limit of {self.max_file_bytes} bytes",
            path=path,
            limit_bytes=self.max_file_bytes,
        )

    def __repr__(self) -> str:
        return f"<FileStore {str(self.base_dir)!r} {self.state.value}>"


class FileReader:
    """An open file read in chunks in worker threads (from :meth:`FileStore.open_read`);
    yields at most ``size_bytes`` bytes.

    Attributes:
        size_bytes: the file's size when it was opened.
    """

    def __init__(self, fd: int, size_bytes: int, chunk_bytes: int) -> None:
        self._fd = fd
        self.size_bytes = size_bytes
        self._chunk = chunk_bytes
        self._left = size_bytes

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            # Up to the size seen at open: a file appended to meanwhile still
            # yields exactly ``size`` bytes (what a Content-Length announced);
            # a file replaced by an atomic write keeps its old inode open here.
            while self._fd >= 0 and self._left > 0:
                want = min(self._chunk, self._left)
                chunk = await to_thread.run_sync(os.read, self._fd, want)
                if not chunk:
                    break
                self._left -= len(chunk)
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the descriptor (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    async def __aenter__(self) -> FileReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _open_file(name: str, flags: int, dir_fd: int, shown: str) -> int:
    try:
        return os.open(name, flags, 0o666, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileMissingError("no such file", path=shown) from None
    except IsADirectoryError:
        raise FileConflictError("the path is a directory", path=shown) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathEscapeError("the file is an unresolved symlink", path=shown) from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise FileConflictError("not a regular file", path=shown) from None
        raise


def _require_regular(fd: int, shown: str) -> os.stat_result:
    st = os.fstat(fd)
    if stat_mod.S_ISDIR(st.st_mode):
        raise FileConflictError("the path is a directory", path=shown)
    if not stat_mod.S_ISREG(st.st_mode):
        raise FileConflictError("not a regular file", path=shown)
    return st


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _commit(fd: int, dfd: int, tmp: str, name: str, shown: str, overwrite: bool) -> None:
    """fsync and close the temporary file, rename it over ``name``, fsync the
    directory. Closes both descriptors exactly once; removes ``tmp`` on failure."""
    try:
        _sync_close(fd)
    except BaseException:
        _discard(-1, dfd, tmp)
        raise
    try:
        if overwrite:
            try:
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except IsADirectoryError:
                raise FileConflictError("the path is a directory", path=shown) from None
        else:
            try:
                os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                raise FileConflictError("the file exists", path=shown) from None
            os.unlink(tmp, dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        _discard(-1, dfd, tmp)
        raise
    os.close(dfd)


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(fd: int, dfd: int, tmp: str) -> None:
    """Close and remove an unfinished temporary file (never raises)."""
    if fd >= 0:
        with contextlib.suppress(OSError):  # already closed by _commit
            os.close(fd)
    with contextlib.suppress(OSError):  # never created, or already renamed
        os.unlink(tmp, dir_fd=dfd)
    with contextlib.suppress(OSError):  # already closed
        os.close(dfd)


def _rename(sfd: int, sname: str, dfd: int, dname: str, src: str, dst: str, ow: bool) -> None:
    try:
        if ow:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            return
        try:
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileExistsError:
            raise FileConflictError("the destination exists", path=dst) from None
        os.unlink(sname, dir_fd=sfd)
    except FileNotFoundError:
        raise FileMissingError("no such file", path=src) from None
    except IsADirectoryError:
        raise FileConflictError("the destination is a directory", path=dst) from None
    except NotADirectoryError:
        raise FileConflictError("a directory cannot replace a file", path=dst) from None
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileConflictError("the destination directory is not empty", path=dst) from None
        if exc.errno == errno.EPERM:  # link(2) of a directory
            raise FileConflictError("overwrite=False moves files only", path=dst) from None
        raise
