"""`rlhf stats` as a script: python scripts/stats.py --help"""

import sys

from rlhf.cli import main

sys.exit(main(["stats", *sys.argv[1:]]))
