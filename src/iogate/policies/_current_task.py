"""The running task, without ``asyncio.current_task()``'s overhead on CPython 3.11.

On 3.11, ``asyncio.current_task()`` is Python code around ``get_running_loop()``,
which makes a ``getpid()`` system call on every use (the check is gone in 3.12,
where ``current_task`` is C code that is fast already). On 3.11 this module
reads the running task from asyncio's own ``_current_tasks`` map, keyed by a
per-thread cache of the running loop (a thread runs one loop at a time; a
cached loop that is not running has no current task, which sends the lookup
down the slow path that refreshes the cache). On every other version the
shortcut is off and :func:`current_task_or_none` is ``asyncio.current_task``,
with ``None`` instead of a ``RuntimeError`` outside a running loop.

The hot path (:meth:`~iogate.policies.Pipeline.run`) spells the shortcut out as
three C calls, ``TASK_OF_LOOP(LOOP_OF_THREAD.get(get_ident()))``, and calls
:func:`current_task_or_none` only when that gives ``None`` (always, off 3.11:
there ``LOOP_OF_THREAD`` stays empty).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from threading import get_ident
from typing import Any

__all__ = ["LOOP_OF_THREAD", "TASK_OF_LOOP", "current_task", "current_task_or_none", "get_ident"]

LOOP_OF_THREAD: dict[int, object] = {}
"""The running loop of each thread, as last seen (filled on 3.11 only)."""

_NO_TASKS: dict[object, asyncio.Task[Any]] = {}
TASK_OF_LOOP: Callable[[object], asyncio.Task[Any] | None] = _NO_TASKS.get
"""The running task of a loop, or ``None`` (on 3.11: ``asyncio.tasks._current_tasks.get``)."""

if sys.version_info[:2] == (3, 11):  # pragma: no branch - the project runs on 3.11
    from asyncio.events import _get_running_loop

    try:
        from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - an interpreter without the tasks dict
        pass
    else:
        TASK_OF_LOOP = _current_tasks.get

    def current_task_or_none(
        _get: Callable[[object], asyncio.Task[Any] | None] = TASK_OF_LOOP,
        _loops: dict[int, object] = LOOP_OF_THREAD,
        _ident: Callable[[], int] = get_ident,
    ) -> asyncio.Task[Any] | None:
        """The running task, or ``None`` outside one (the defaults are bound once)."""
        task = _get(_loops.get(_ident()))
        if task is None:
            loop = _get_running_loop()
            if loop is None:
                return None
            _loops[_ident()] = loop
            task = _get(loop)
            if task is None:
                task = asyncio.current_task(loop)
        return task

else:  # pragma: no cover - exercised on other interpreters only

    def current_task_or_none() -> asyncio.Task[Any] | None:
        """The running task, or ``None`` outside one (``asyncio.current_task``)."""
        try:
            return asyncio.current_task()
        except RuntimeError:
            return None


def current_task() -> asyncio.Task[Any]:
    """The running task (fast path of ``asyncio.current_task``).

    Raises:
        RuntimeError: not called inside an asyncio task.
    """
    task = current_task_or_none()
    if task is None:
        raise RuntimeError("must be called inside an asyncio task")
    return task
