"""The loop's run folder: atomic JSON files, round folders, which step comes next, where each
round's policy lives, the round records, and the prompt split made once at the start (layout:
`rlhf.loop.cycle`'s docstring)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rlhf.config import require, save_config
from rlhf.loop.config import LoopConfig
from rlhf.loop.watch import STEPS
from rlhf.prompts import load_prompts, write_prompts
from rlhf.runfolder import save_run_config


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def round_dir(out: Path, r: int) -> Path:
    d = out / f"round_{r:02d}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def next_step(state: dict) -> tuple[int, str]:
    """The (round, step) after the one `state` says is done."""
    i = STEPS.index(state["step"])
    return (state["round"], STEPS[i + 1]) if i + 1 < len(STEPS) else (state["round"] + 1,
                                                                     STEPS[0])


def policy_path(cfg: LoopConfig, out: Path, r: int) -> str:
    """The policy after round r (round 0: the starting policy)."""
    return cfg.policy if r == 0 else str(out / f"round_{r:02d}" / "policy_train" / "policy")


def rebuild_rounds(out: Path) -> None:
    """rounds.jsonl from every finished round's record.json (idempotent on resume)."""
    recs = [read_json(p) for p in sorted(out.glob("round_*/record.json"))]
    tmp = out / "rounds.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    os.replace(tmp, out / "rounds.jsonl")


def init_run(cfg: LoopConfig, out: Path) -> dict:
    """Create the run folder (config, prompt split) or read back where a previous run was."""
    out.mkdir(parents=True, exist_ok=True)
    state = read_json(out / "state.json")
    if state is not None:  # resuming: refuses settings that differ from config.yaml
        save_run_config(cfg, out, resuming=True)
        print(f"resuming {out}: round {state['round']}, {state['step']} done", file=sys.stderr)
        return state
    prompts = load_prompts(cfg.prompts or None, seed=cfg.runtime.seed,
                           column=cfg.prompt_column or None, split=cfg.prompt_split)
    require(len(prompts) > cfg.eval.n_prompts + 1, "eval.n_prompts",
            f"leaves no training prompts ({len(prompts)} prompts in all)")
    held, train = prompts[:cfg.eval.n_prompts], prompts[cfg.eval.n_prompts:]
    write_prompts(out / "prompts_eval.jsonl", held)  # JSONL: multi-line and chat prompts survive
    write_prompts(out / "prompts_train.jsonl", train)
    save_config(cfg, out / "config.yaml")
    return {"round": 0, "step": "policy"}  # round 0's only step is eval


def lines(path: Path) -> list[str]:
    return [s for s in path.read_text().splitlines() if s.strip()]
