"""The `rlhf` console command: `rlhf <subcommand> ...`.

Each subcommand is the `cli(argv) -> int` function of its stage's module; this file only
lists them, in pipeline order, and turns expected failures into one line on stderr.
"""

from __future__ import annotations

import sys

from rlhf.config import UserError
from rlhf.dpo import implicit as dpo_eval
from rlhf.dpo import train as train_dpo
from rlhf.feedback import formats, pairs, rate, stats
from rlhf.lm import cli as generate
from rlhf.loop import cycle, report
from rlhf.policy import train as train_policy
from rlhf.reward import train as train_reward

COMMANDS = {
    # name: (the stage's `cli(argv)`, one-line description)
    "generate": (generate.cli, "sample text from a model"),
    "sample-pairs": (pairs.cli, "draw two responses per prompt into a queue to rate"),
    "import-pairs": (formats.cli, "import HH/TRL/PandaLM/FineGrained pairs"),
    "rate": (rate.cli, "the pairwise comparison prompt (terminal or piped stdin)"),
    "stats": (stats.cli, "counts, bias, consistency and agreement of a comparison store"),
    "train-reward": (train_reward.cli, "train a reward model from comparisons"),
    "eval-reward": (dpo_eval.cli, "accuracy, calibration, length baseline (RM or DPO policy)"),
    "train-dpo": (train_dpo.cli, "fine-tune the policy on comparisons directly (DPO/IPO)"),
    "train-policy": (train_policy.cli, "fine-tune the policy (RLOO/REINFORCE/PPO)"),
    "loop": (cycle.cli, "rounds of sample, rate, train reward, train policy"),
    "report": (report.cli, "a Markdown report with plots of a run folder"),
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
    try:
        return int(COMMANDS[name][0](rest) or 0)
    except (UserError, FileNotFoundError) as e:
        print(f"rlhf {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
