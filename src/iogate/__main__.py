"""``python -m iogate`` runs the CLI."""

from iogate.cli import main

main()
