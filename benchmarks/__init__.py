"""iogate's benchmarks: ``python -m benchmarks [--only NAME]`` (or ``make bench ONLY=NAME``).

Every scenario runs iogate side by side with the raw driver and with its peers,
in one process and one run, prints a table of ratios and writes
``benchmarks/results/<scenario>.json``. See ``benchmarks/README.md``.
"""
