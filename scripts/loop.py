"""Thin wrapper: `python scripts/loop.py ARGS` = `rlhf loop ARGS`."""

import sys

from rlhf.cli import main

sys.exit(main(["loop", *sys.argv[1:]]))
