"""``[files]`` of ``iogate.toml``: the gateway's sandboxed file area."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FilesConfig"]


class FilesConfig(BaseModel):
    """``[files]``: where ``/v1/files/{path}`` reads and writes.

    Absent: the file routes answer 404 (problem ``files-not-configured``).

    Attributes:
        base_dir: the sandbox directory (relative to the working directory, or
            absolute); created on start.
        max_file_bytes: the largest file accepted (bytes; default 1 GiB).
        chunk_bytes: size of each streamed read / write system call (bytes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_dir: str = Field(min_length=1)
    max_file_bytes: int = Field(default=2**30, ge=1)
    chunk_bytes: int = Field(default=256 * 1024, ge=4096, le=64 * 2**20)
