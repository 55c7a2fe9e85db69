"""Mixed batches: ordered steps on databases (SQL and Redis), upstreams and the cache, with
step dataflow (``$ref``), conditions, transaction groups and one deadline.

>>> request = Batch.model_validate({"steps": [...]})   # doctest: +SKIP
>>> result = await run_batch(gateway, request)                 # doctest: +SKIP
>>> result.to_json()["results"][0]["ok"]                       # doctest: +SKIP

See :mod:`iogate.batch.model` for the wire format and
:mod:`iogate.batch.engine` for the semantics.
"""

from iogate.batch.engine import run_batch
from iogate.batch.model import (
    MAX_STEPS,
    Batch,
    CacheStep,
    DatabaseStep,
    RedisStep,
    UpstreamStep,
)
from iogate.batch.result import BatchResult, StepResult

__all__ = [
    "Batch",
    "BatchResult",
    "CacheStep",
    "DatabaseStep",
    "MAX_STEPS",
    "RedisStep",
    "StepResult",
    "UpstreamStep",
    "run_batch",
]
