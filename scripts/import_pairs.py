"""Same as `rlhf import-pairs ...` (`rlhf import-pairs --help`)."""

import sys

from rlhf.cli import main

sys.exit(main(["import-pairs", *sys.argv[1:]]))
