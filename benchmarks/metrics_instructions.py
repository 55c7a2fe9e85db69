"""Instructions per request of the request log and the server span, counted by callgrind.

Timings on a shared machine swing by a microsecond from run to run; the
instruction count of the same work does not. For each subject of
:func:`benchmarks.metrics.request_subjects` this runs the subject ``N`` and
``2N`` times, each in its own ``valgrind --tool=callgrind`` process (hash
seed fixed), and reports ``(instructions(2N) - instructions(N)) / N``: the
instructions of one request, start-up and imports cancelled out. A
feature's cost is the difference with its baseline subject (the same
request without it), as in ``python -m benchmarks --only metrics``::

    PYTHONPATH=src:. python -m benchmarks.metrics_instructions [--requests 2000]
        [--subjects iogate.request_id,iogate.request_log.409]

Needs ``valgrind`` (Debian's package). Each process takes ~30 s under
callgrind. The subjects run their coroutines without an event loop (none of
them suspends), so only the request's own work is counted.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import callgrind_instructions

_DEFAULT = (
    "iogate.request_id",
    "iogate.request_id.409_unlogged",
    "iogate.request_log.409",
    "iogate.request_log.409.own_handler",
    "iogate.access_log.200",
    "iogate.server_span",
    "iogate.server_span.sdk",
    "iogate.server_span.simple_processor",
    "iogate.server_span.unsampled",
    "otel.sdk_span",
)
_BASELINE = {
    "iogate.request_log.409": "iogate.request_id.409_unlogged",
    "iogate.request_log.409.own_handler": "iogate.request_id.409_unlogged",
}


def _child(subject: str, requests: int) -> None:
    """Run ``subject`` ``requests`` times (after 200 warm-up requests)."""
    from benchmarks.metrics import request_subjects

    subjects, restore = request_subjects()
    call = subjects[subject]
    gc.collect()
    gc.freeze()  # the set-up's objects out of the collector's way: the same heap every run
    for n in (200, requests):
        for _ in range(n):
            coro = call()
            try:
                coro.send(None)  # type: ignore[attr-defined]
            except StopIteration:
                pass
            else:
                raise RuntimeError(f"{subject} suspended")
    restore()


def _instructions(subject: str, requests: int, out: Path) -> int:
    args = ["-m", "benchmarks.metrics_instructions", "--child", subject]
    return callgrind_instructions([*args, "--requests", str(requests)], out)


def main(argv: Sequence[str]) -> int:
    """Print instructions per request of each subject and of each feature."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_instructions")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--subjects", default=",".join(_DEFAULT))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.requests)
        return 0
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subject in args.subjects.split(","):
            counts = [
                _instructions(subject, n, Path(tmp) / f"{subject}.{n}.out")
                for n in (args.requests, 2 * args.requests)
            ]
            per[subject] = (counts[1] - counts[0]) / args.requests
            base = _BASELINE.get(subject, "iogate.request_id")
            added = f"  (+{per[subject] - per[base]:,.0f} vs {base})" if base in per else ""
            print(f"{subject:40s} {per[subject]:10,.0f} instructions per request{added}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
