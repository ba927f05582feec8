"""Thin entry point: same as `rlhf generate ...`."""

import sys

from rlhf.cli import main

sys.exit(main(["generate", *sys.argv[1:]]))
