"""iogate: non-blocking, pooled and resilient database and API calls."""
