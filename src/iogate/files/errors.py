"""Errors of the sandboxed file store (all :class:`~iogate.errors.IogateError`).

::

    FileStoreError                 path (relative to the base directory)
    ├── UnsafePathError            `..`, absolute path, NUL byte, empty name, lone surrogate,
    │                              too long, refused by the file system (also ValueError)
    ├── PathEscapeError            a symlink resolves outside the base (also PermissionError)
    ├── FileMissingError           nothing at that path (also FileNotFoundError)
    ├── FileConflictError          exists / is a directory / not a directory / not empty
    └── FileTooLargeError          more than ``max_file_bytes``; limit_bytes

Messages name the relative path only, never the base directory's absolute path.
"""

from __future__ import annotations

from iogate.errors import IogateError

__all__ = [
    "FileConflictError",
    "FileMissingError",
    "FileStoreError",
    "FileTooLargeError",
    "PathEscapeError",
    "UnsafePathError",
]


class FileStoreError(IogateError):
    """A file operation was refused or failed; ``path`` is the caller's relative path."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class UnsafePathError(FileStoreError, ValueError):
    """The path is refused: ``..`` component, absolute path, NUL byte,
    backslash, an empty name, a lone surrogate, a component over 255 or a path
    over 4096 bytes (before any I/O), or a name the file system refuses
    (``ENAMETOOLONG``, ``EILSEQ``)."""


class PathEscapeError(FileStoreError, PermissionError):
    """The path resolves outside the base directory (through a symlink), or a
    component was replaced by a symlink while it was being opened."""


class FileMissingError(FileStoreError, FileNotFoundError):
    """Nothing exists at the path (or a parent is missing)."""


class FileConflictError(FileStoreError):
    """The path's current state forbids the operation: the target exists
    (``overwrite=False``), is a directory, a parent is a file, a directory is
    not empty, or the entry is not a regular file (FIFO, device)."""


class FileTooLargeError(FileStoreError):
    """The file is or would become larger than ``limit_bytes`` (bytes)."""

    def __init__(self, message: str, *, path: str, limit_bytes: int) -> None:
        super().__init__(message, path=path)
        self.limit_bytes = limit_bytes
