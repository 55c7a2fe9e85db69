"""TLS verification and a CA bundle, against a loopback HTTPS server whose
self-signed certificate the test makes with the openssl CLI."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from iogate.errors import UpstreamConnectionError
from iogate.http.options import ConnectionOptions
from iogate.http.upstream import Upstream
from tests.servers import serve_aiohttp

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made outside the event loop:
    an RSA key takes openssl a good part of a second)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def https_base(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[str, Path]]:
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": True})

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with serve_aiohttp(app, ssl_context=ctx) as port:
        yield f"https://127.0.0.1:{port}", cert


async def test_unknown_certificate_is_refused(https_base: tuple[str, Path]) -> None:
    base, _ = https_base
    async with Upstream("tls", base_url=base) as api:
        with pytest.raises(UpstreamConnectionError, match=r"(?i)certificate|SSLCertVerification"):
            await api.get("/hello")


async def test_ca_bundle_is_trusted(https_base: tuple[str, Path]) -> None:
    base, cert = https_base
    async with Upstream(
        "tls", base_url=base, options=ConnectionOptions(ca_bundle=str(cert))
    ) as api:
        assert (await api.get("/hello")).json() == {"tls": True}


async def test_verification_can_be_turned_off(https_base: tuple[str, Path]) -> None:
    base, _ = https_base
    async with Upstream("tls", base_url=base, options=ConnectionOptions(verify_tls=False)) as api:
        assert (await api.get("/hello")).status == 200
