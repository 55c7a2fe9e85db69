"""The gateway config of the video service: ``iogate.toml`` as a dict.

The upstream points at :mod:`examples.video_jobs.fake_heygen` here; for the
real API::

    [upstreams.heygen]
    base_url = "https://api.heygen.com"
    headers = { x-api-key = "${HEYGEN_API_KEY}" }
    idempotency_keys = true
"""

from __future__ import annotations

from typing import Any

__all__ = ["video_config"]


def video_config(*, database_url: str, heygen_url: str, files_dir: str) -> dict[str, Any]:
    """The ``iogate.toml`` of the service, as a dict for ``parse_config``.

    Args:
        database_url: ``postgresql://...`` or ``sqlite:///...``.
        heygen_url: the video API's base URL.
        files_dir: the file area of rendered videos and uploaded assets.
    """
    database: dict[str, Any] = {"url": database_url}
    if database_url.startswith("postgres"):
        # the bundled set-up logs in as the cluster's owner; a real deployment
        # gives the service a role of its own (README "PostgreSQL roles")
        database["allow_privileged_login"] = True
    return {
        "databases": {"main": database},
        "upstreams": {
            "heygen": {
                "base_url": heygen_url,
                "headers": {"x-api-key": "${HEYGEN_API_KEY:-heygen-fake-key}"},
                # every POST carries an Idempotency-Key: creates and uploads retry safely
                "idempotency_keys": True,
                "timeout": 60.0,
                "policies": {
                    "deadline": 120.0,
                    "retry": {"max_attempts": 3, "initial": 0.02, "max_delay": 0.5},
                    "circuit_breaker": {
                        "failure_rate": 0.5,
                        "window": 20,
                        "minimum_calls": 10,
                        "wait_in_open": 10.0,
                    },
                },
            }
        },
        "files": {"base_dir": files_dir},
        "tasks": {"max_concurrency": 8, "drain_timeout": 0.5},
    }
