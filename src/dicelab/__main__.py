"""``python -m dicelab`` is the ``dicelab`` command."""

from dicelab.cli import main

main()
