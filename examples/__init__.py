"""The original design's two applications, built on iogate (tested in the main suite)."""
