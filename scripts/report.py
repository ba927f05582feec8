"""Thin wrapper: `python scripts/report.py ARGS` = `rlhf report ARGS`."""

import sys

from rlhf.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
