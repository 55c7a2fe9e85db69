"""uvicorn's HTTP/1.1 protocols, answering a malformed request with a problem.

When the bytes a client sends cannot be parsed as HTTP/1.1 (a bad request
line, a header name or value with forbidden bytes, a bad ``Content-Length``
or chunk size), uvicorn never calls the application: its protocol class
answers ``400`` with the plain text ``Invalid HTTP request received.``,
logs that sentence at WARNING (no traceback) and closes the connection. The
classes here subclass uvicorn's two protocols and override only that answer
(``send_400_response``, uvicorn 0.30+), so it is an RFC 9457 problem like
every other error of the gateway::

    HTTP/1.1 400 Bad Request
    content-type: application/problem+json
    connection: close

    {"type":"urn:iogate:problem:malformed-request","title":"Malformed HTTP request",
     "status":400,"detail":"the request could not be parsed as HTTP/1.1"}

What uvicorn does not let an application change (documented in the README):

- that answer has no ``instance`` and no ``request_id``: no request was
  parsed, so there is no path and no ``X-Request-ID``;
- a ``503`` for ``limit_concurrency`` (``[server.limits] max_connections``), and the
  ``500`` it sends when an application raises before starting a response
  (the gateway's own error middleware answers first), are plain text too,
  from ASGI apps inside uvicorn's protocol that no option replaces;
- a request uvicorn's parser accepts but the ASGI scope cannot hold is
  refused the same way (a non-ASCII byte in the request target: uvicorn's
  ``decode("ascii")`` fails inside the parser callback);
- HTTP/2 (``zttp``), TLS handshakes and WebSocket upgrades are not served by
  these classes.

:data:`HTTP_PROTOCOL` is the class ``iogate serve`` gives ``uvicorn.Config(http=...)``:
the httptools one when httptools is installed (uvicorn's ``auto`` choice), else h11.
"""

from __future__ import annotations

import asyncio
from typing import Final

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from iogate.server.problems import PROBLEM_JSON, ProblemType

__all__ = ["HTTP_PROTOCOL", "MALFORMED", "ProblemH11Protocol"]

MALFORMED: Final = ProblemType(400, "malformed-request", "Malformed HTTP request")
_BODY: Final = orjson.dumps(
    {
        "type": MALFORMED.uri,
        "title": MALFORMED.title,
        "status": MALFORMED.status,
        "detail": "the request could not be parsed as HTTP/1.1",
    }
)
_HEADERS: Final = [
    (b"content-type", PROBLEM_JSON.encode("ascii")),
    (b"content-length", str(len(_BODY)).encode("ascii")),
    (b"connection", b"close"),
]


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a malformed request gets the problem above."""

    def send_400_response(self, msg: str) -> None:
        """Answer the malformed request with a problem (``msg``, uvicorn's
        plain-text sentence, is what it logged) and close the connection, as
        uvicorn's own answer does."""
        headers = [*self.server_state.default_headers, *_HEADERS]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=_BODY),
            h11.EndOfMessage(),
        ):
            output = self.conn.send(event)
            if output:
                self.transport.write(output)
        self.transport.close()


HTTP_PROTOCOL: type[asyncio.Protocol]

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn's "auto" is h11 too
    HTTP_PROTOCOL = ProblemH11Protocol
else:
    _RAW_HEADERS: Final = b"".join(name + b": " + value + b"\r\n" for name, value in _HEADERS)

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; a malformed request gets the problem above."""

        def send_400_response(self, msg: str) -> None:
            """Answer the malformed request with a problem and close the
            connection, as uvicorn's own answer does."""
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([_RAW_HEADERS, b"\r\n", _BODY])
            self.transport.write(b"".join(content))
            self.transport.close()

    HTTP_PROTOCOL = ProblemHttpToolsProtocol
    __all__ += ["ProblemHttpToolsProtocol"]
