"""iogate.wire: what the faces (the HTTP gateway, the CLI) and the services
(batches, background tasks) share, so that none of them imports another's face.

- :mod:`iogate.wire.principal` — who is calling, with which scopes;
- :mod:`iogate.wire.upstream_answers` — the JSON shape of a relayed upstream answer;
- :mod:`iogate.wire.cache_keys` — the HTTP API's namespace in the gateway cache;
- :mod:`iogate.wire.redis_commands` — Redis commands' scopes, the original
  operation form and the JSON shape of a reply.

Nothing here imports a web framework.
"""
