"""Confining a caller's path to a base directory.

Two checks, then a safe open (the pattern of OWASP's path-traversal guidance
and of ``werkzeug.security.safe_join``, hardened against symlink races):

1. **Lexical** (:func:`split_relative`): the path is relative, holds no NUL
   byte, no backslash and no ``..`` component; ``.`` and empty components
   (``a//b``) are dropped. It must be encodable as UTF-8 (no lone surrogate,
   and no ``\\udcXX`` from ``surrogateescape``, which would name a raw,
   non-UTF-8 byte), each component at most :data:`MAX_NAME_BYTES` and the
   whole at most :data:`MAX_PATH_BYTES` once encoded (Linux ``NAME_MAX`` /
   ``PATH_MAX``). Refused paths never reach the file system; a file system
   with smaller limits answers ``ENAMETOOLONG``, which the store maps to the
   same error (:func:`name_error`).
2. **Resolution** (:func:`resolve_beneath`): ``os.path.realpath`` of
   ``base/path`` must stay under the real base (``os.path.commonpath``), so a
   symlink inside the base may point elsewhere inside it, never outside.
3. **Open** (:func:`open_parent`): the *resolved* components are opened one
   by one from a descriptor of the base directory with ``O_NOFOLLOW`` and
   ``dir_fd`` (``openat(2)``). A resolved path has no symlink in it, so if any
   component turns into a symlink between step 2 and step 3 (the classic
   time-of-check/time-of-use race), the open fails with ``ELOOP`` and the call
   is refused instead of following it.

What remains (documented, not fixable from user space without Linux's
``openat2(RESOLVE_BENEATH)``, which Python does not expose): a process that
can write inside the base may *move* a directory that is already open out of
the base, or create a hard link to a file outside it; both need local write
access to the base directory, which the gateway's callers do not have.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod

from iogate.files.errors import (
    FileConflictError,
    FileMissingError,
    PathEscapeError,
    UnsafePathError,
)

__all__ = [
    "DIR_FLAGS",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "name_error",
    "open_dir",
    "open_parent",
    "resolve_beneath",
    "shown_path",
    "split_relative",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_SYMLINK = "a path component is a symlink that was not resolved"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
MAX_NAME_BYTES = 255
"""Longest path component, in bytes of UTF-8 (Linux ``NAME_MAX``; ext4, XFS, btrfs, tmpfs)."""
MAX_PATH_BYTES = 4096
"""Longest relative path, in bytes of UTF-8 (Linux ``PATH_MAX``, with the terminating NUL)."""
_SHOWN_CHARS = 256
# errnos that only the name of a path can cause: too long for this file system,
# or bytes it does not accept as a name (ZFS utf8only, some FUSE file systems).
_NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})


def shown_path(path: str) -> str:
    """``path`` as an error may show it: lone surrogates as ``\\udXXX``
    escapes (so it can be encoded as JSON), NUL as ``\\0``, and at most 256
    characters (``…`` marks a cut)."""
    safe = path.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\0")
    return safe if len(safe) <= _SHOWN_CHARS else safe[:_SHOWN_CHARS] + "…"


def name_error(exc: OSError, shown: str) -> Exception:
    """The error to raise for ``exc`` from a system call on the path ``shown``:
    an :class:`UnsafePathError` when only the name can have caused it
    (``ENAMETOOLONG``, ``EILSEQ``), else ``exc`` itself (disk full,
    permissions, I/O errors are the server's, not the caller's)."""
    if exc.errno in _NAME_ERRNOS:
        return UnsafePathError(
            f"the file system refuses this name ({os.strerror(exc.errno or 0)})",
            path=shown_path(shown),
        )
    return exc


def split_relative(path: str) -> list[str]:
    """The components of a caller's relative path (``"a/./b/"`` → ``["a", "b"]``).

    Raises:
        UnsafePathError: NUL byte, backslash, absolute path, a ``..`` component,
            a character UTF-8 cannot encode, or a component or path longer
            than :data:`MAX_NAME_BYTES` / :data:`MAX_PATH_BYTES`.
    """
    if "\x00" in path:
        raise UnsafePathError("the path contains a NUL byte", path=shown_path(path))
    try:
        encoded = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafePathError(
            "the path is not valid Unicode (it holds a lone surrogate)", path=shown_path(path)
        ) from None
    if encoded > MAX_PATH_BYTES:
        raise UnsafePathError(
            f"the path is longer than {MAX_PATH_BYTES} bytes", path=shown_path(path)
        )
    if "\\" in path:
        raise UnsafePathError("the path contains a backslash", path=path)
    if path.startswith("/"):
        raise UnsafePathError("absolute paths are refused; give a path under the base", path=path)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError("'..' components are refused", path=path)
    if encoded > MAX_NAME_BYTES and any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise UnsafePathError(
            f"a path component is longer than {MAX_NAME_BYTES} bytes", path=shown_path(path)
        )
    return parts


def resolve_beneath(base_real: str, parts: list[str], shown: str) -> list[str]:
    """The components of ``base/parts`` with every symlink resolved, relative to
    ``base_real`` (itself a realpath).

    Raises:
        PathEscapeError: the resolved path is outside ``base_real``.
    """
    if not parts:
        return []
    resolved = os.path.realpath(os.path.join(base_real, *parts))
    if os.path.commonpath([base_real, resolved]) != base_real:
        raise PathEscapeError("the path resolves outside the base directory", path=shown)
    rel = os.path.relpath(resolved, base_real)
    return [] if rel == "." else rel.split(os.sep)


def open_dir(base_fd: int, parts: list[str], shown: str, *, create: bool = False) -> int:
    """Open the directory ``parts`` (already resolved) under ``base_fd``, one
    component at a time with ``O_NOFOLLOW``; ``create`` makes missing ones
    (mode 0o777 minus umask). The caller closes the returned descriptor.

    Raises:
        FileMissingError: a component is missing (and ``create`` is false).
        FileConflictError: a component is not a directory.
        PathEscapeError: a component is (now) a symlink.
    """
    fd = os.open(".", DIR_FLAGS, dir_fd=base_fd)
    try:
        for part in parts:
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileMissingError("no such directory", path=shown) from None
                with contextlib.suppress(FileExistsError):  # a concurrent writer made it
                    os.mkdir(part, dir_fd=fd)
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _component_error(exc, fd, part, shown) from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent(
    base_fd: int, parts: list[str], shown: str, *, create: bool = False
) -> tuple[int, str]:
    """``(descriptor of the parent directory, final name)`` of a resolved path
    with at least one component. See :func:`open_dir` for errors."""
    if not parts:
        raise UnsafePathError("the base directory itself is not a file", path=shown)
    return open_dir(base_fd, parts[:-1], shown, create=create), parts[-1]


def _component_error(exc: OSError, dir_fd: int, name: str, shown: str) -> Exception:
    if exc.errno == errno.ELOOP:
        return PathEscapeError(_SYMLINK, path=shown)
    if exc.errno == errno.ENOTDIR:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return FileConflictError("a path component is not a directory", path=shown)
        if stat_mod.S_ISLNK(st.st_mode):
            return PathEscapeError(_SYMLINK, path=shown)
        return FileConflictError("a path component is not a directory", path=shown)
    return name_error(exc, shown)
