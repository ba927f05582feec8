"""Same as `rlhf train-sft ...` (`rlhf train-sft --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["train-sft", *sys.argv[1:]]))
