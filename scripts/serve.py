"""Same as `rlhf serve ...` (`rlhf serve --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
