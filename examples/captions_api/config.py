"""The gateway config of the captions service: ``iogate.toml`` as a dict.

The three upstreams point at :mod:`examples.captions_api.fake_llm` here; for
the real providers change ``base_url`` and put the keys in the environment
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``HF_TOKEN``)::

    [upstreams.openai]
    base_url = "https://api.openai.com/v1"
    provider = "openai"
    model = "gpt-4o-mini"
    auth = { scheme = "bearer", secret = "${OPENAI_API_KEY}" }
    tokens_per_minute = 200000
"""

from __future__ import annotations

from typing import Any

__all__ = ["captions_config"]


def captions_config(
    *,
    database_url: str,
    openai_url: str,
    anthropic_url: str,
    huggingface_url: str | None = None,
    tokens_per_minute: float = 200_000,
    keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``iogate.toml`` of the service, as a dict for ``parse_config``.

    Args:
        database_url: ``postgresql://...`` or ``sqlite:///...``.
        openai_url / anthropic_url / huggingface_url: the providers' base URLs
            (the fake's: ``<fake>/v1``, ``<fake>``, ``<fake>``).
        tokens_per_minute: each provider's token budget (estimated up front,
            corrected from the answer's usage).
        keys: ``[keys]`` for the gateway routes under ``/gateway``.
    """
    # Failover must be quick: two attempts with a short backoff, a breaker that
    # opens after 4 failures of the last 10 calls and stays open 30 s.
    policies = {
        "deadline": 10.0,
        "timeout": 5.0,
        "retry": {"max_attempts": 2, "initial": 0.02, "max_delay": 0.2, "max_retry_after": 2.0},
        "circuit_breaker": {
            "failure_rate": 0.5,
            "window": 10,
            "minimum_calls": 4,
            "wait_in_open": 30.0,
        },
    }
    database: dict[str, Any] = {"url": database_url}
    if database_url.startswith("postgres"):
        # the bundled set-up logs in as the cluster's owner; a real deployment
        # gives the service a role of its own instead (README "PostgreSQL roles")
        database["allow_privileged_login"] = True
    upstreams: dict[str, Any] = {
        "openai": {
            "base_url": openai_url,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "auth": {"scheme": "bearer", "secret": "${OPENAI_API_KEY:-sk-fake}"},
            "tokens_per_minute": tokens_per_minute,
            "rate_limit_max_wait": 0.0,
            "policies": policies,
        },
        "anthropic": {
            "base_url": anthropic_url,
            "provider": "anthropic",
            "model": "claude-3-5-haiku-latest",
            "auth": {
                "scheme": "header",
                "name": "x-api-key",
                "secret": "${ANTHROPIC_API_KEY:-fake}",
            },
            "tokens_per_minute": tokens_per_minute,
            "rate_limit_max_wait": 0.0,
            "policies": policies,
        },
    }
    if huggingface_url is not None:
        upstreams["huggingface"] = {
            "base_url": huggingface_url,
            "provider": "huggingface",
            "model": "HuggingFaceH4/zephyr-7b-beta",
            "auth": {"scheme": "bearer", "secret": "${HF_TOKEN:-hf_fake}"},
            "policies": policies,
        }
    return {
        "databases": {"main": database},
        "upstreams": upstreams,
        "keys": keys or {},
        "tasks": {"max_concurrency": 4, "drain_timeout": 2.0},
    }
