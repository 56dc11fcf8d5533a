"""``python -m recstack.cli``: the same command line as the ``recstack`` script."""

from recstack.cli import main

main()
