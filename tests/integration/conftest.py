"""The integration suite fails when anything blocks the event loop.

anyio's test suite turns a blocked loop into a failure; this does the same with
asyncio's own debug mode: every async test runs on a loop with ``debug`` on and
``slow_callback_duration`` = :data:`BLOCKED_LOOP_S`, and asyncio's report of a
callback or task step that held the loop longer ("Executing <...> took 1.2
seconds", logged on ``asyncio``) fails the test that caused it. Debug mode also
raises on a non-thread-safe call into the loop from another thread (a worker
thread must use ``call_soon_threadsafe``).

The bound is generous: this 2-core machine runs servers (and a headless Chromium)
beside the tests, a step is measured in wall time, so a process descheduled under
load looks blocked (0.5 s gave false failures), and a test's own set-up (building
an app) runs in a task step too. The steps of async
fixtures' set-up and tear-down are not judged (first imports, servers starting). A statement or a
file read done on the loop thread by iogate takes far longer than that on the
workloads these tests use (10 million rows, 1 GiB files).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

BLOCKED_LOOP_S = 1.0
"""A task step or callback holding the event loop longer than this fails the test (seconds)."""


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's slow-callback reports."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not (message.startswith("Executing ") and " took " in message):
            return
        if "_asyncgen_fixture_wrapper" in message or "_async_fixture_wrapper" in message:
            return  # a fixture's own set-up step (first imports, server start-up)
        self.reports.append(message)


@pytest.fixture(autouse=True)
async def _no_blocked_event_loop() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCKED_LOOP_S
    handler = _SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    try:
        yield
    finally:
        asyncio_log.removeHandler(handler)
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
    if handler.reports:
        pytest.fail(
            f"the event loop was blocked for more than {BLOCKED_LOOP_S}s:\n"
            + "\n".join(handler.reports[:5]),
            pytrace=False,
        )
