"""``iogate serve --workers N``: each worker process builds its own app.

uvicorn's multi-process mode imports an app factory by name in every worker
(``factory=True``), so the configuration travels as a file path in the
environment variable :data:`CONFIG_ENV`. Each worker then owns its own
:class:`~iogate.gateway.Gateway`: its pools, circuit breakers, rate limits,
per-key rate limits and concurrency counts, cache and metrics are per process
(``/v1/stats`` answers for the worker that served it).
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from iogate.config import load_config
from iogate.server.app import create_app

__all__ = ["CONFIG_ENV", "app_from_env"]

CONFIG_ENV = "IOGATE_CONFIG"
"""Path of ``iogate.toml`` for :func:`app_from_env` (unset or empty: the embedded default)."""


def app_from_env() -> FastAPI:
    """The gateway app of the config named by ``$IOGATE_CONFIG``.

    Raises:
        ConfigError: the file is missing or invalid (the CLI validated it before).
    """
    path = os.environ.get(CONFIG_ENV) or None
    return create_app(load_config(path), freeze_heap=True)
