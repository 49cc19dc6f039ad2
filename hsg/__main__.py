"""`python -m hsg` is the `hsg` command."""

from hsg.cli import main

main()
