"""What a person watching `rlhf loop` sees besides the files: the loop's progress (a bar on
a terminal, a line per step otherwise), each round's key figures, its over-optimisation
warnings (no gold needed; the rule: rlhf.loop.signals) and the optional stop on them
(`stop_on_warning`)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.harness.progress import Progress
from rlhf.loop import signals as LS
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import STEPS, in_round, judge_of
from rlhf.loop.models import Models


def steps_done(state: dict) -> int:
    """Loop steps done (round 0's eval counts one) when `state` is the last one done."""
    if state["round"] == 0:
        return int(state["step"] == "eval")
    return 1 + 5 * (state["round"] - 1) + STEPS.index(state["step"]) + 1


def announce(bar: Progress, r: int, step: str, seconds: float, record: dict) -> None:
    """The step's line (with the round's key figures and warnings after its evaluation)."""
    ev = record.get("eval", {}) if step == "eval" else {}
    cis = (record.get("intervals") or {}) if ev else {}  # 95% intervals of the shares
    shown = ", ".join(f"{k} {ev[k]:.3f}" + (" [{:.2f}, {:.2f}]".format(*cis[k]["ci95"])
                                            if k in cis else "")
                      for k in ("gold", "kl", "win_rate", "rm_accuracy")
                      if isinstance(ev.get(k), (int, float)))
    bar.write(f"round {r}: {step} done in {seconds:.1f}s" + (f" ({shown})" if shown else ""))
    if step == "eval":
        for w in record.get("warnings", []):
            bar.write(f"round {r}: WARNING over-optimisation (no gold needed): {w}")
    bar.update(**({"round": r, "gold": ev["gold"]} if "gold" in ev else {"round": r}))


def stop_here(cfg: LoopConfig, step: str, record: dict) -> bool:
    """stop_on_warning: stop after the evaluation of a round that warned."""
    return cfg.stop_on_warning and step == "eval" and bool(record.get("warnings"))


def watch_round(cfg: LoopConfig, out: Path, r: int, record: dict, prompts: list[str],
                models: Models) -> None:
    """The round's no-gold signals, the counts and 95% intervals of its shares, and its
    warnings (rlhf.loop.signals), into the record. `prompts`: one per evaluation sample."""
    ev = json.loads((out / in_round(r, "eval.json")).read_text())
    start = json.loads((out / in_round(0, "eval.json")).read_text())
    if cfg.policy_method == "rl":
        rm, tok = models.reward(r)
    else:  # a DPO loop has no reward model (no ensemble): lengths in the policy's tokens
        rm, tok = None, models.policy(r)[1]
    now, base = LS.round_signals(ev, prompts, start["texts"], rm, tok)
    metrics = out / (judge_of(record)[0] or "")
    rows = [json.loads(s) for s in metrics.read_text().splitlines() if s.strip()] \
        if metrics.is_file() else []
    rm_val = next((row for row in reversed(rows) if "val_clear_pairs" in row), None)
    record["signals"] = {"round": now, "start": base}
    record["intervals"] = LS.intervals(record, rm_val)
    record["warnings"] = LS.round_warnings(record, now, base, cfg.rl.guard) \
        if cfg.rl.guard.warn else []
