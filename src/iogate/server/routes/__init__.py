"""iogate.server.routes."""
