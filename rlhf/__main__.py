"""`python -m rlhf ...` and `torchrun -m rlhf ...` run the console command."""

import sys

from rlhf.cli import main

sys.exit(main())
