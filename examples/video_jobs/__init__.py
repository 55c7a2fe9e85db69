"""Video jobs (the HeyGen flow) on iogate + FastAPI (see README.md)."""
