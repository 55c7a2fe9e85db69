"""iogate.cache."""
