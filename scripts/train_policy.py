"""Thin wrapper: `python scripts/train_policy.py CONFIG [section.key=value ...]`."""

import sys

from rlhf.cli import main

sys.exit(main(["train-policy", *sys.argv[1:]]))
