"""File routes: ``GET / PUT / DELETE /v1/files/{path}`` on the ``[files]`` area.

- ``GET``: a file's bytes, streamed (``Content-Length``, a type guessed from
  the name); a directory (or ``/v1/files/``) answers a JSON listing.
- ``PUT``: the request body, streamed into an atomic write (201 created,
  200 replaced; ``?overwrite=false`` refuses an existing file with 409).
- ``DELETE``: a file or an empty directory (204).

Scopes ``files:read`` / ``files:write``. Paths are confined to the base
directory (:mod:`iogate.files._paths`): ``..``, absolute paths and NUL bytes
answer 400, a symlink out of the base 403 — the check runs on the decoded
path, so ``%2e%2e`` is ``..``. Memory stays within a few chunks whatever
the file's size: the body is read with ``request.stream()`` and the file
sent with a StreamingResponse.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from iogate.files import (
    FileConflictError,
    FileInfo,
    FileMissingError,
    FileStore,
    FileStoreError,
    FileTooLargeError,
    PathEscapeError,
    UnsafePathError,
)
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.problems import ProblemType, problem_body, problem_response

__all__ = ["router"]

router = APIRouter(tags=["files"], route_class=JsonBodyRoute)

_PROBLEMS: tuple[tuple[type[FileStoreError], ProblemType], ...] = (
    (UnsafePathError, ProblemType(400, "invalid-path", "Invalid path")),
    (PathEscapeError, ProblemType(403, "path-outside-base", "Path outside the file area")),
    (FileMissingError, ProblemType(404, "file-not-found", "File not found")),
    (FileConflictError, ProblemType(409, "file-conflict", "File conflict")),
    (FileTooLargeError, ProblemType(413, "file-too-large", "File too large")),
)
_NOT_CONFIGURED = ProblemType(404, "files-not-configured", "Files not configured")
_FORBIDDEN = ProblemType(403, "forbidden", "Forbidden")
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Unsafe path: '..', absolute, NUL (problem+json)"},
    403: {"description": "Missing scope, or a symlink out of the area (problem+json)"},
    404: {"description": "No such file, or [files] not configured (problem+json)"},
    409: {"description": "A directory, or an existing file with overwrite=false"},
    413: {"description": "Larger than max_file_bytes (problem+json)"},
}


class _Refused(Exception):
    def __init__(self, kind: ProblemType, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _problem(request: Request, kind: ProblemType, detail: str, **extra: Any) -> Response:
    body = problem_body(kind, detail, request.scope)
    body.update(extra)
    return problem_response(kind.status, body)


def _render(request: Request, exc: Exception) -> Response:
    if isinstance(exc, _Refused):
        return _problem(request, exc.kind, exc.detail)
    if isinstance(exc, FileStoreError):
        kind = next(k for cls, k in _PROBLEMS if isinstance(exc, cls))
        extra: dict[str, Any] = {"path": exc.path}
        if isinstance(exc, FileTooLargeError):
            extra["limit_bytes"] = exc.limit_bytes
        return _problem(request, kind, str(exc), **extra)
    return _problem(request, _FORBIDDEN, str(exc))  # authorize(): PermissionError


def _store(request: Request, scope: str) -> FileStore:
    authorize(request, scope)
    store = gateway_of(request).files
    if store is None:
        raise _Refused(_NOT_CONFIGURED, "this gateway has no [files] area")
    return store


def _info(info: FileInfo) -> dict[str, Any]:
    return {
        "path": info.path,
        "kind": info.kind,
        "size": info.size_bytes,
        "modified": info.modified,
    }


@router.get("/v1/files/{path:path}", responses=_ERRORS, summary="Read a file (streamed)")
async def read_file(path: str, request: Request) -> Response:
    """A file's content, streamed; a directory's entries as JSON."""
    try:
        store = _store(request, "files:read")
        if path.strip("/") == "" or (await store.stat(path)).kind == "directory":
            entries = await store.list(path)
            return json_response({"path": path.strip("/"), "entries": [_info(e) for e in entries]})
        reader = await store.open_read(path)
    except (FileStoreError, PermissionError, _Refused) as exc:
        return _render(request, exc)
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return StreamingResponse(
        reader,
        media_type=media_type,
        headers={"content-length": str(reader.size_bytes)},
        background=BackgroundTask(reader.aclose),  # also closed when the iteration ends
    )


@router.put("/v1/files/{path:path}", responses=_ERRORS, summary="Write a file (streamed, atomic)")
async def write_file(path: str, request: Request, overwrite: bool = True) -> Response:
    """Replace (or create) a file with the request body, atomically."""
    try:
        store = _store(request, "files:write")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > store.max_file_bytes:
            raise FileTooLargeError(
                f"the file exceeds the limit of {store.max_file_bytes} bytes",
                path=path,
                limit_bytes=store.max_file_bytes,
            )
        existed = await store.exists(path)
        size = await store.write_stream(path, request.stream(), overwrite=overwrite)
    except (FileStoreError, PermissionError, _Refused) as exc:
        return _render(request, exc)
    info = await store.stat(path)
    return json_response({**_info(info), "size": size}, status=200 if existed else 201)


@router.delete("/v1/files/{path:path}", responses=_ERRORS, summary="Delete a file")
async def delete_file(path: str, request: Request) -> Response:
    """Remove a file or an empty directory."""
    try:
        store = _store(request, "files:write")
        await store.delete(path)
    except (FileStoreError, PermissionError, _Refused) as exc:
        return _render(request, exc)
    return Response(status_code=204)
