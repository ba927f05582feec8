"""Same as `rlhf train-reward CONFIG [section.key=value ...]`."""

import sys

from rlhf.cli import main

sys.exit(main(["train-reward", *sys.argv[1:]]))
