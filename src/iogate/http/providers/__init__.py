"""iogate.http.providers."""
