"""`rlhf sample-pairs` as a script: python scripts/sample_pairs.py --help"""

import sys

from rlhf.cli import main

sys.exit(main(["sample-pairs", *sys.argv[1:]]))
