"""Same as `rlhf eval-reward [CONFIG] [section.key=value ...]`."""

import sys

from rlhf.cli import main

sys.exit(main(["eval-reward", *sys.argv[1:]]))
