"""iogate.http."""
