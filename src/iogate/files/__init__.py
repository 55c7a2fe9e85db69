"""Sandboxed, non-blocking file operations: :class:`FileStore`.

Every path is relative to the store's base directory and confined to it
(see :mod:`iogate.files._paths`); writes are atomic; reads and writes stream
in chunks through worker threads so the event loop never blocks.
"""

from iogate.files.config import FilesConfig
from iogate.files.errors import (
    FileConflictError,
    FileMissingError,
    FileStoreError,
    FileTooLargeError,
    PathEscapeError,
    UnsafePathError,
)
from iogate.files.store import FileInfo, FileReader, FileStore

__all__ = [
    "FileStore",
    "FileInfo",
    "FileReader",
    "FilesConfig",
    "FileStoreError",
    "UnsafePathError",
    "PathEscapeError",
    "FileMissingError",
    "FileConflictError",
    "FileTooLargeError",
]
