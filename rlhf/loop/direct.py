"""The loop's steps (3) and (4) when `policy_method: dpo`: no reward model, the policy learns
from each round's comparisons directly (`rlhf.dpo.train`), round by round as Llama 3's
post-training did (sample from the current policy, collect preferences on those samples,
optimise, repeat).

- On-policy data: round r's DPO trains on round r's comparisons only, pairs sampled from the
  policy of round r-1 (earlier rounds' pairs came from older policies; the reward-model path
  instead trains on every comparison so far, which a reward model can use off-policy).
- Reference (`dpo_reference`): 'start' (default) keeps the starting policy as pi_ref in every
  round, the same anchor as the RL path's KL penalty, so the two methods' KL-to-start and the
  implicit reward beta log(pi_r / pi_start) are read on the same page; 'previous' re-anchors
  each round on the policy it starts from. The policy always starts from the previous round's.
- Selection by disagreement needs a reward-model ensemble: refused in the config
  (`LoopConfig.check`) rather than silently replaced by random pairs.
- The previous round's DPO policy is scored on the round's fresh pairs by its implicit reward,
  recorded where the reward-model path records the previous reward model's accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlhf import distributed as dist
from rlhf.config import with_keys
from rlhf.dpo import implicit
from rlhf.dpo import train as dpo_stage
from rlhf.feedback.comparisons import to_pairs
from rlhf.feedback.store import ComparisonStore
from rlhf.loop.config import LoopConfig


def data_step(out: Path, r: int, previous_policy: str, info: dist.DistInfo) -> dict:
    """(3) Snapshot this round's comparisons for its DPO (a resumed step keeps the snapshot);
    the previous round's DPO policy's implicit-reward accuracy on them."""
    rd = out / f"round_{r:02d}"
    snap = rd / "comparisons_used.jsonl"
    every = ComparisonStore(out / "comparisons.jsonl").load()
    new = [c for c in every if c.meta.get("round") == r]
    if info.is_main and not snap.is_file():
        tmp = snap.with_name(snap.name + ".tmp")
        tmp.unlink(missing_ok=True)
        ComparisonStore(tmp).extend(new)
        os.replace(tmp, snap)
    dist.barrier(info)
    pairs, fresh = to_pairs(new, ties="drop"), None
    if r > 1 and info.is_main and pairs and implicit.is_dpo_policy(previous_policy):
        fresh = implicit.evaluate(previous_policy, pairs).get("accuracy")
    return {"comparisons": str(snap.relative_to(out)), "n_comparisons_total": len(every),
            "n_comparisons_new": len(new), "n_comparisons_used": len(new),
            "previous_rm_accuracy_on_new": fresh}


def policy_step(cfg: LoopConfig, out: Path, r: int, init: str, info: dist.DistInfo) -> dict:
    """(4) DPO of the previous round's policy `init` on this round's comparisons, the
    reference by `dpo_reference`."""
    rd = out / f"round_{r:02d}"
    ref = cfg.policy if cfg.dpo_reference == "start" else init
    dcfg = with_keys(cfg.dpo, {  # what the loop decides (loop.config.LOOP_SETS["dpo"])
        "out_dir": str(rd / "policy_train"), "data.paths": [str(rd / "comparisons_used.jsonl")],
        "model.init": init, "model.reference": ref, "progress": False,
        "runtime": cfg.runtime}, who="the loop")
    summary = dpo_stage.train(dcfg)
    return {"policy_init": init, "policy": str(rd / "policy_train" / "policy"),
            "dpo_reference": ref,
            "policy_metrics_file": f"round_{r:02d}/policy_train/metrics.jsonl",
            "reward_metrics_file": f"round_{r:02d}/policy_train/metrics.jsonl",
            "policy_gold_file": None, "policy_metrics": summary}
