"""The `rlhf` console command: `rlhf <subcommand> ...`.

Each subcommand is the `cli(argv) -> int` function of its stage's module; this file only
lists them, in pipeline order, and turns expected failures into one line on stderr. Every
command with a config reads it one way (`rlhf.config.parse_cli` / `config_parser`): `rlhf CMD
CONFIG.yaml [key=value ...]` or `rlhf CMD --config CONFIG.yaml [key=value ...]`, not both.
Expected failures: a `UserError` (bad file, config, state, busy run folder...), an
`OSError` (read-only, full disk, permission: the path and the reason), an unreadable
safetensors file. `--debug` (or RLHF_DEBUG=1) adds the traceback. SIGINT/SIGTERM during
training: the stage saves its state and the exit code is 130 / 143. `--allow-changed
KEY[,KEY]` lets a resumed run change those keys of its saved config (`rlhf.harness.folder`).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

from safetensors import SafetensorError

from rlhf.config import UserError
from rlhf.dpo import implicit as dpo_eval
from rlhf.dpo import train as train_dpo
from rlhf.feedback import export, imports, pairs, stats
from rlhf.feedback.text import visible
from rlhf.harness import distributed as dist
from rlhf.harness.folder import Interrupted
from rlhf.kto import train as train_kto
from rlhf.lm import cli as generate
from rlhf.loop import cycle, report
from rlhf.policy import train as train_policy
from rlhf.raters import rate, web
from rlhf.reward import train as train_reward
from rlhf.sft import train as train_sft

COMMANDS = {
    # name: (the stage's `cli(argv)`, one-line description)
    "generate": (generate.cli, "sample text from a model"),
    "sample-pairs": (pairs.cli, "responses per prompt into a queue: compare, rank, rate, correct"),
    "import-pairs": (imports.cli, "import HH/TRL/PandaLM/FineGrained data sets"),
    "export": (export.cli, "write a store as TRL data sets (pairs, KTO, SFT, text) or notes"),
    "rate": (rate.cli, "compare, rank, rate or correct the items of a queue (terminal or stdin)"),
    "serve": (web.cli, "the rating page for browsers: one private link per rater"),
    "stats": (stats.cli, "counts, bias, consistency and agreement of a feedback store, by kind"),
    "train-sft": (train_sft.cli, "supervised fine-tuning on demonstrations, corrections, text"),
    "train-reward": (train_reward.cli, "train a reward model from comparisons"),
    "eval-reward": (dpo_eval.cli, "accuracy, calibration, length baseline (RM or DPO policy)"),
    "train-dpo": (train_dpo.cli, "fine-tune the policy on comparisons directly (DPO/IPO)"),
    "train-kto": (train_kto.cli, "fine-tune the policy on thumbs up/down, unpaired (KTO)"),
    "train-policy": (train_policy.cli, "fine-tune the policy (RLOO/REINFORCE/PPO)"),
    "loop": (cycle.cli, "rounds of sample, rate, train reward, train policy"),
    "report": (report.cli, "a Markdown report with plots of a run folder"),
}


def usage() -> str:
    lines = ["usage: rlhf <command> [args]   (rlhf <command> --help for details)",
             "       a command with a config: rlhf <command> [CONFIG.yaml | --config "
             "CONFIG.yaml] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<14}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def os_error_line(e: OSError) -> str:
    """An OSError as one line: the path and the reason (with what to do for a full disk)."""
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        why += " (the disk is full: free space or choose another out_dir)"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why += " (choose a writable out_dir)"
    return f"{e.filename}: {why}" if e.filename else why


def one_line(message: str) -> str:
    """An error as one line: a message of several lines (some libraries' are) joined, and
    control characters written as escapes (`visible`: a message may quote a file or a path)."""
    return visible(" ".join(x.strip() for x in message.splitlines() if x.strip()))


def take_flags(argv: list[str]) -> tuple[list[str], bool]:
    """Remove `--debug` and `--allow-changed KEY[,KEY]` (anywhere in argv); the latter goes
    to RLHF_ALLOW_CHANGED, which every stage of this process (and its children) reads."""
    rest, debug, allow = [], os.environ.get("RLHF_DEBUG", "") not in ("", "0"), []
    it = iter(argv)
    for a in it:
        if a == "--debug":
            debug = True
        elif a == "--allow-changed":
            allow.append(next(it, ""))
        elif a.startswith("--allow-changed="):
            allow.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    if allow:
        os.environ["RLHF_ALLOW_CHANGED"] = ",".join(
            [os.environ.get("RLHF_ALLOW_CHANGED", ""), *allow]).strip(",")
        print(f"note: allowing resumed runs to change {os.environ['RLHF_ALLOW_CHANGED']}",
              file=sys.stderr)
    return rest, debug


def main(argv: list[str] | None = None) -> int:
    """`rlhf <command> ...`: the command's exit code. The one end of every command for the
    processes too: each rank leaves the process group here (`rlhf.harness.distributed.finish`: after
    a barrier when the command returned, at once after an error, whatever the error), then a
    torchrun rank ends without Python's finalization (`rlhf.harness.distributed.exit_process` says
    why): under torchrun `main` does not return."""
    code, returned = 1, False
    try:
        code, returned = command(argv)
    except SystemExit as e:  # argparse: --help, a usage error
        if not dist.joined():
            raise
        code = e.code
    except BaseException:  # not an expected error: its traceback, then the same end
        if not dist.joined():
            raise
        traceback.print_exc()
        code = 1
    finally:
        try:
            dist.finish(ok=returned)
        except Exception:  # the final barrier: a rank that failed first (its error says why)
            traceback.print_exc()
            code = 1
    if dist.joined():
        dist.exit_process(code)
    return code


def command(argv: list[str] | None) -> tuple[int, bool]:
    """Run one command: (exit code, whether the stage returned, rather than failed)."""
    argv, debug = take_flags(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0, True
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlhf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2, True
    try:
        return int(COMMANDS[name][0](rest) or 0), True
    except Interrupted as e:
        print(f"rlhf {name}: {e}", file=sys.stderr)
        return e.code, False
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"rlhf {name}: interrupted", file=sys.stderr)
        return 130, False
    except (UserError, OSError, SafetensorError) as e:
        if debug:
            traceback.print_exc()
        line = os_error_line(e) if isinstance(e, OSError) else str(e)
        if isinstance(e, SafetensorError):
            line = f"unreadable safetensors file: {e}"
        print(f"rlhf {name}: error: {one_line(line)}", file=sys.stderr)
        return 2, False


if __name__ == "__main__":
    sys.exit(main())
