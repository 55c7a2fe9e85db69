"""Background tasks that survive restarts: :class:`TaskManager`.

Tasks run with bounded concurrency; their state (queued / running /
succeeded / failed / cancelled / interrupted), progress, result or problem
are stored in an SQL database through iogate's own API. See
:mod:`iogate.tasks.manager` for the restart and shutdown rules.

:mod:`iogate.tasks.distributed` (``SaqTaskManager``, not imported here: it needs
the ``cluster`` extra) runs the same API on the SAQ queue in Redis, shared by
every gateway process (``[tasks] backend = "saq"``).
"""

from iogate.tasks.config import TasksConfig
from iogate.tasks.manager import Runner, TaskContext, TaskHandle, TaskManager, TaskWork
from iogate.tasks.models import (
    FINAL_STATES,
    TaskCancelledError,
    TaskNotFoundError,
    TaskQueueFullError,
    TaskRecord,
    TaskState,
)
from iogate.tasks.store import TaskStore

__all__ = [
    "TaskManager",
    "TaskHandle",
    "TaskContext",
    "TaskRecord",
    "TaskState",
    "TaskStore",
    "TasksConfig",
    "Runner",
    "TaskWork",
    "FINAL_STATES",
    "TaskNotFoundError",
    "TaskQueueFullError",
    "TaskCancelledError",
]
