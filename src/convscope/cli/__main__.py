"""``python -m convscope.cli`` — same as the ``convscope`` command."""

from convscope.cli import main

main()
