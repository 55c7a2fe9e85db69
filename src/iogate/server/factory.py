"""``iogate serve --workers N``: each worker process builds its own app.

uvicorn's multi-process mode imports an app factory by name in every worker
(``factory=True``), so the configuration travels as a file path in the
environment variable :data:`CONFIG_ENV`. Each worker then owns its own
:class:`~iogate.gateway.Gateway`: its pools, circuit breakers, rate limits,
per-key rate limits and concurrency counts, cache and metrics are per process.

uvicorn's worker processes start with its own log config unless given none;
``iogate serve`` gives none and :func:`app_from_env` installs the same
logging as a single process (:func:`~iogate.observability._logging.configure_logging`:
JSON lines with the request id), and the request log when
:data:`ACCESS_LOG_ENV` is set. The workers share the directory of
``$IOGATE_METRICS_DIR`` (made by ``iogate serve``), so ``/metrics`` and
``/v1/stats`` answer for all of them (:mod:`iogate.observability._deployment`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from iogate.config import load_config
from iogate.observability._deployment import METRICS_DIR_ENV
from iogate.observability._logging import configure_logging
from iogate.server.app import create_app

__all__ = ["ACCESS_LOG_ENV", "CONFIG_ENV", "app_from_env"]

CONFIG_ENV = "IOGATE_CONFIG"
"""Path of ``iogate.toml`` for :func:`app_from_env` (unset or empty: the embedded default)."""
ACCESS_LOG_ENV = "IOGATE_ACCESS_LOG"
"""Non-empty: log every request (``iogate serve --access-log``)."""


def app_from_env() -> FastAPI:
    """The gateway app of the config named by ``$IOGATE_CONFIG``.

    Raises:
        ConfigError: the file is missing or invalid (the CLI validated it before).
    """
    path = os.environ.get(CONFIG_ENV) or None
    config = load_config(path)
    obs = config.observability
    configure_logging(log_format=obs.log_format, level=obs.log_level)
    return create_app(
        config,
        freeze_heap=True,
        access_log=bool(os.environ.get(ACCESS_LOG_ENV)),
        check_references=True,
        deployment_dir=Path(shared) if (shared := os.environ.get(METRICS_DIR_ENV)) else None,
    )
