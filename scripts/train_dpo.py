"""Same as `rlhf train-dpo ...` (`rlhf train-dpo --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["train-dpo", *sys.argv[1:]]))
