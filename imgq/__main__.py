"""``python -m imgq`` runs the ``imgq`` command."""

from imgq.cli import main

main()
