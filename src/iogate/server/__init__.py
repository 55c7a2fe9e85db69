"""iogate.server."""
