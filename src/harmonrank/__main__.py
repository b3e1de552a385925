"""``python -m harmonrank`` runs the command line."""

from .cli import main

main()
