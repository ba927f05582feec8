"""`rlhf rate` as a script: python scripts/rate.py --help"""

import sys

from rlhf.cli import main

sys.exit(main(["rate", *sys.argv[1:]]))
