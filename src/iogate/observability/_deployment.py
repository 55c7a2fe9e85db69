"""One view of a deployment of several worker processes (``iogate serve --workers N``).

Each worker keeps recording into its own :class:`~iogate.observability.metrics.Metrics`
(the hot path is unchanged) and, every :data:`INTERVAL_S` seconds, writes a
snapshot of it to a file of a directory the workers share (``iogate serve``
creates it; ``$IOGATE_METRICS_DIR``): its raw histograms
(:meth:`Metrics.export_state`), its other iogate families and its process
collectors as Prometheus text. A scrape through any worker reads every
other live worker's file plus its own live figures and answers for the
deployment:

- ``iogate_operation_duration_seconds`` from the merged raw histograms
  (:meth:`Metrics.merged`): every bucket, count and sum is the total of every
  worker;
- every other ``iogate_*`` series summed over the workers (counters, and
  gauges that add up: in-flight calls, pool connections and bounds, waiters,
  cache entries; a breaker-state gauge counts the workers in that state),
  except ``iogate_pool_acquire_wait_p99_seconds``, the workers' maximum;
- the process, platform and GC collectors per worker, under a ``worker``
  label (the process id): they describe processes, not the gateway.

``/v1/stats`` answers the same way: calls, errors, outcomes, latency
percentiles and windows from the merged histograms; pool and breaker figures
and slow operations are the answering worker's.

Why not prometheus-client's multiprocess mode: it needs every figure recorded
into prometheus-client metric objects backed by per-process mmap files (an
extra ~1 µs per observation on our hot path, and the collectors that read
pools and breakers at scrape time do not fit it), and it drops the process
collectors. Why not a ``worker`` label on every series plus aggregates:
``sum by (resource)`` in every query and alert would then double count.
Here the series stay those of a single process, so the same dashboards and
alert rules serve one process or N, and counters sum exactly: a figure is at
most :data:`INTERVAL_S` old for the other workers (the scrape's own worker is
live). A worker that exits leaves its file, which is ignored (and removed)
once its process id is gone: its counts then leave the sums, as a counter
reset, which ``rate()`` handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from iogate.observability._prometheus import (
    LabelCache,
    MetricsCollector,
    histogram_text,
    process_registry,
)
from iogate.observability.metrics import Metrics

__all__ = ["INTERVAL_S", "METRICS_DIR_ENV", "Deployment"]

METRICS_DIR_ENV: Final = "IOGATE_METRICS_DIR"
"""The directory the workers of one ``iogate serve --workers N`` share."""
INTERVAL_S: Final = 1.0
"""Seconds between two snapshots of a worker."""
_MAX: Final = frozenset({"iogate_pool_acquire_wait_p99_seconds"})


class Deployment:
    """This worker's part of the deployment view (see the module docstring).

    Args:
        directory: the shared directory (exists).
        metrics: this worker's recorder.
        worker: this worker's id in file names and the ``worker`` label
            (default: the process id, which also tells whether it is alive).
    """

    __slots__ = ("_dir", "_metrics", "_process", "_task", "worker")

    def __init__(self, directory: Path, metrics: Metrics, *, worker: int | None = None) -> None:
        self._dir = directory
        self._metrics = metrics
        self.worker = worker if worker is not None else os.getpid()
        self._task: asyncio.Task[None] | None = None
        self._process = process_registry()

    # -- this worker's snapshots -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's figures now (what its file holds)."""
        families = CollectorRegistry(auto_describe=False)
        families.register(MetricsCollector(self._metrics))
        return {
            "worker": self.worker,
            "series": self._metrics.export_state(),
            "families": generate_latest(families).decode(),
            "process": generate_latest(self._process).decode(),
        }

    def write(self) -> None:
        """Write the snapshot atomically (a temporary file renamed over the last)."""
        path = self._dir / f"{self.worker}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.snapshot()))
        tmp.replace(path)

    def start(self) -> None:
        """Write a snapshot now and every :data:`INTERVAL_S` seconds (off the loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop writing and remove this worker's file (its counts leave the sums)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(FileNotFoundError):
            (self._dir / f"{self.worker}.json").unlink()

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.write)
            await asyncio.sleep(INTERVAL_S)

    # -- the deployment's figures ------------------------------------------------------------

    async def snapshots(self) -> list[dict[str, Any]]:
        """Every live worker's snapshot: this one's live, the others' from their files."""
        others = await asyncio.to_thread(self._read_others)
        return [self.snapshot(), *others]

    def _read_others(self) -> list[dict[str, Any]]:
        out = []
        for path in self._dir.glob("*.json"):
            try:
                worker = int(path.stem)
            except ValueError:
                continue
            if worker == self.worker:
                continue
            if not _alive(worker):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            try:
                out.append(orjson.loads(path.read_bytes()))
            except (FileNotFoundError, orjson.JSONDecodeError):
                continue  # replaced or half-written between listing and reading
        return out

    async def merged(self) -> Metrics:
        """The deployment's call figures: every worker's histograms merged."""
        return self._metrics.merged([s["series"] for s in await self.snapshots()])

    async def render(self, labels: LabelCache | None = None) -> bytes:
        """The deployment's Prometheus text (see the module docstring)."""
        snaps = await self.snapshots()
        merged = self._metrics.merged([s["series"] for s in snaps])
        out = [histogram_text(merged, labels)]
        out.extend(_summed([s["families"] for s in snaps]))
        out.extend(_per_worker([(s["worker"], s["process"]) for s in snaps]))
        return "".join(out).encode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _summed(texts: list[str]) -> Iterator[str]:
    """The families of ``texts`` with each sample summed over the texts
    (the maximum for :data:`_MAX`), in the order first seen."""
    heads: dict[str, tuple[str, str]] = {}
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            heads.setdefault(fam.name, (fam.type, fam.documentation))
            into = samples.setdefault(fam.name, {})
            for s in fam.samples:
                key = (s.name, tuple(s.labels.items()))
                if key in into and fam.name in _MAX:
                    into[key] = max(into[key], s.value)
                else:
                    into[key] = into.get(key, 0.0) + s.value
    for name, (kind, doc) in heads.items():
        lines = [f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"]
        for (sample, labels), value in samples[name].items():
            lines.append(f"{sample}{_labels(dict(labels))} {_number(value)}\n")
        yield "".join(lines)


def _per_worker(texts: list[tuple[int, str]]) -> Iterator[str]:
    """The families of each worker's text, every sample labelled ``worker``."""
    heads: dict[str, tuple[str, str]] = {}
    lines: dict[str, list[str]] = {}
    for worker, text in texts:
        for fam in text_string_to_metric_families(text):
            heads.setdefault(fam.name, (fam.type, fam.documentation))
            into = lines.setdefault(fam.name, [])
            for s in fam.samples:
                labels = {"worker": str(worker), **s.labels}
                into.append(f"{s.name}{_labels(labels)} {_number(s.value)}\n")
    for name, (kind, doc) in heads.items():
        yield f"# HELP {name} {doc}\n# TYPE {name} {kind}\n" + "".join(lines[name])
