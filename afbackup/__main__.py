"""``python -m afbackup`` runs the CLI."""

from afbackup.cli import main

main()
