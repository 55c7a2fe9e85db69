"""iogate.databases."""
