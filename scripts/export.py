"""Same as `rlhf export ...` (`rlhf export --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["export", *sys.argv[1:]]))
