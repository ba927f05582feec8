"""The loop's run folder: atomic JSON files, round folders, which step comes next, where each
round's policy lives, the round records, and the prompt split made once at the start (layout:
`rlhf.loop.cycle`'s docstring)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlhf.config import require, save_config
from rlhf.files import write_atomic
from rlhf.harness.folder import save_run_config
from rlhf.loop.config import LoopConfig
from rlhf.prompts import load_prompts, write_prompts

STEPS = ("sample", "rate", "reward", "policy", "eval")
"""A round's steps, in order (round 0 has only `eval`)."""


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (`rlhf.config.write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=1))


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def round_name(r: int) -> str:
    """The folder name of round r: the one place it is spelled (round_00 is the start)."""
    return f"round_{r:02d}"


def round_dir(out: Path, r: int) -> Path:
    """Round r's folder (created)."""
    d = out / round_name(r)
    d.mkdir(parents=True, exist_ok=True)
    return d


def in_round(r: int, *parts: str) -> str:
    """A path inside round r's folder, relative to the run folder (as records keep them)."""
    return "/".join((round_name(r), *parts))


def next_step(state: dict) -> tuple[int, str]:
    """The (round, step) after the one `state` says is done."""
    i = STEPS.index(state["step"])
    return (state["round"], STEPS[i + 1]) if i + 1 < len(STEPS) else (state["round"] + 1,
                                                                     STEPS[0])


def policy_path(cfg: LoopConfig, out: Path, r: int) -> str:
    """The policy after round r (round 0: the starting policy)."""
    return cfg.policy if r == 0 else str(out / in_round(r, "policy_train", "policy"))


def sft_policy_path(out: Path, r: int) -> Path:
    """Round r's policy after its supervised step on the round's corrections (when it had
    any): where its policy step starts."""
    return out / in_round(r, "sft", "policy")


def sft_done(out: Path, r: int) -> bool:
    """Round r's supervised step has finished (its summary written after the policy)."""
    return (out / in_round(r, "sft", "summary.json")).is_file()


def start_path(cfg: LoopConfig, out: Path, r: int) -> str:
    """Where round r's policy step starts: its SFT policy when the round had corrections,
    else the policy after round r-1."""
    return str(sft_policy_path(out, r)) if sft_done(out, r) else policy_path(cfg, out, r - 1)


def reward_model_path(out: Path, r: int) -> Path:
    """Round r's reward model."""
    return out / in_round(r, "reward_model", "model")


def judge_of(record: dict) -> tuple[str | None, dict | None]:
    """What judged the round's pairs, by the method: the reward model (rl) or the DPO policy's
    implicit reward (dpo): (its training metrics file, relative; its predecessor on this
    round's new pairs {"accuracy", "hits", "n"} or None)."""
    if "dpo_metrics_file" in record:
        return record["dpo_metrics_file"], record.get("previous_policy_on_new")
    return record.get("reward_metrics_file"), record.get("previous_rm_on_new")


def rebuild_rounds(out: Path) -> None:
    """rounds.jsonl from every finished round's record.json (idempotent on resume)."""
    recs = [read_json(p) for p in sorted(out.glob(round_name(0)[:-2] + "*/record.json"))]
    write_atomic(out / "rounds.jsonl", "".join(json.dumps(r) + "\n" for r in recs))


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
