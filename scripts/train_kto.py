"""Same as `rlhf train-kto ...` (`rlhf train-kto --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["train-kto", *sys.argv[1:]]))
