"""The Instagram-captions service on iogate + FastAPI (see README.md)."""
