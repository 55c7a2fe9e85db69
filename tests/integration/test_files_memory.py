"""A 1 GiB upload and download through a real ``iogate serve`` process keep the
server's resident memory growth under 50 MB (VmHWM from /proc/<pid>/status).

The GiB is generated on the fly by the client and checked with CRC-32 on the
way back; nothing is stored in the repository.
"""

from __future__ import annotations

import asyncio
import signal
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.servers import free_port, stop, wait_for_port
from tests.subprocess_env import start_iogate

SIZE = 1 << 30  # 1 GiB
CHUNK = 1 << 20
LIMIT_BYTES = 50 * 1_000_000


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def test_one_gib_round_trip_keeps_rss_growth_under_50_mb(tmp_path: Path) -> None:
    (tmp_path / "iogate.toml").write_text(
        '[databases.main]\nurl = "sqlite:///var/iogate.db"\n\n'
        f'[files]\nbase_dir = "files"\nmax_file_bytes = {2 * SIZE}\n'
    )
    port = free_port()
    proc = start_iogate(tmp_path, port)
    base = f"http://127.0.0.1:{port}/v1/files"
    try:
        await asyncio.to_thread(wait_for_port, port, proc, "iogate serve")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            # warm-up: every code path once, so imports and pools are in the baseline
            async with session.put(f"{base}/warm.bin", data=b"w" * 512 * 1024) as resp:
                assert resp.status == 201
            async with session.get(f"{base}/warm.bin") as resp:
                assert len(await resp.read()) == 512 * 1024
            baseline_kib = _status_kib(proc.pid, "VmRSS")

            block = bytes(range(256)) * (CHUNK // 256)
            sent_crc = 0

            async def body() -> AsyncIterator[bytes]:
                nonlocal sent_crc
                for i in range(SIZE // CHUNK):
                    piece = block[i % 256 :] + block[: i % 256]  # not all chunks alike
                    sent_crc = zlib.crc32(piece, sent_crc)
                    yield piece

            started = time.monotonic()
            headers = {"content-length": str(SIZE)}
            async with session.put(f"{base}/big.bin", data=body(), headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                assert (await resp.json())["size"] == SIZE
            assert (tmp_path / "files" / "big.bin").stat().st_size == SIZE

            got, got_crc = 0, 0
            async with session.get(f"{base}/big.bin") as resp:
                assert resp.status == 200
                assert resp.headers["content-length"] == str(SIZE)
                async for piece in resp.content.iter_chunked(CHUNK):
                    got += len(piece)
                    got_crc = zlib.crc32(piece, got_crc)
            elapsed = time.monotonic() - started
        assert (got, got_crc) == (SIZE, sent_crc)
        peak_kib = _status_kib(proc.pid, "VmHWM")
        growth = (peak_kib - baseline_kib) * 1024
        print(f"1 GiB up + down in {elapsed:.1f}s; RSS growth {growth / 1e6:.1f} MB")
        assert growth < LIMIT_BYTES, f"resident memory grew by {growth / 1e6:.1f} MB"
    finally:
        stop(proc, signal.SIGTERM)
