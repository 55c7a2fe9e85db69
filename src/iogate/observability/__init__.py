"""iogate.observability."""
