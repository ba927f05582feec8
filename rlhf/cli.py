"""The `rlhf` console command: `rlhf <subcommand> ...`.

Each subcommand lives in the module of its stage, as a `cli(argv) -> int` function; this file
only lists them (imported lazily, so `rlhf --help` stays fast).
"""

from __future__ import annotations

import importlib
import sys

from rlhf.comparisons import RecordError
from rlhf.config import ConfigError

COMMANDS = {
    # name: (module holding `cli(argv)`, one-line description)
    "generate": ("rlhf.generation_cli", "sample text from a model"),
    "sample-pairs": ("rlhf.pairs", "draw two responses per prompt into a queue to rate"),
    "import-pairs": ("rlhf.formats", "import HH/TRL/PandaLM/FineGrained pairs"),
    "rate": ("rlhf.rater", "the pairwise comparison prompt (terminal or piped stdin)"),
    "stats": ("rlhf.stats", "counts, bias, consistency and agreement of a comparison store"),
    "train-reward": ("rlhf.train_reward", "train a reward model from comparisons"),
    "eval-reward": ("rlhf.eval_reward", "accuracy, calibration, length baseline"),
    "train-policy": ("rlhf.train_policy", "fine-tune the policy (RLOO/REINFORCE/PPO)"),
    "loop": ("rlhf.loop", "rounds of sample, rate, train reward, train policy"),
    "report": ("rlhf.report", "a Markdown report with plots of a run folder"),
}


def usage() -> str:
    lines = ["usage: rlhf <command> [args]   (rlhf <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<14}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlhf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.cli(rest) or 0)
    except (ConfigError, RecordError, FileNotFoundError) as e:
        print(f"rlhf {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
