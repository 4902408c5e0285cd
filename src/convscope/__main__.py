"""``python -m convscope`` — same as the ``convscope`` command."""

from convscope.cli import main

main()
