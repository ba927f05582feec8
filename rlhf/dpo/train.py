"""`rlhf train-dpo CONFIG [overrides]`: fine-tune a policy directly on pairwise comparisons
(DPO, Rafailov et al. 2023; IPO, Azar et al. 2023), no reward model.

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder;
2. data: the reward stage's (`rlhf.reward.data.prepare_data`): stores / imported files ->
   pairs (ties 1/2 or dropped, strength margins) -> split *by prompt* -> token ids;
3. the reference pass: pi_ref's log-probs of every pair, once, cached in the run folder
   (`rlhf.dpo.pairs.reference_logprobs`; recomputed only if the pairs or reference change);
4. policy (DDP replica or FSDP shards), AdamW, resume from `state/`;
5. steps: the global batch of step s is a pure function of (seed, s); each rank takes its
   shard, cut into micro-batches; chosen and rejected in one packed forward pass (shared
   prompt once); loss = `rlhf.reward.losses.dpo_loss` / `ipo_loss` of the log-ratios against
   the cached reference; validation (held-out implicit-reward accuracy) every `eval_every`;
6. the policy folder (+ dpo.json: reference, beta), summary.json and dpo.png.

Metrics per step: loss, accuracy (implicit reward ranks the pair right, clear pairs), margin
(mean beta (h_c - h_r)), logratio_chosen / logratio_rejected (mean h: how far each side's
log-prob drifted from the reference), logp_chosen / logp_rejected, grad_norm, pairs_per_s.
Distributed as the reward stage: DDP averages per-rank means over equal shards; the data
position is the global step, so a run resumes with another number of processes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf import distributed as dist
from rlhf.config import parse_cli, save_config
from rlhf.dpo.config import DPOTrainConfig
from rlhf.dpo.implicit import metrics_of, pair_rewards, save_dpo_policy
from rlhf.dpo.pairs import pair_logprobs, reference_logprobs
from rlhf.dpo.report import plot_run
from rlhf.lm.folders import load_model
from rlhf.optim import clip_gradients, lr_at, make_optimizer, set_lr
from rlhf.reward.data import epoch_batches, prepare_data
from rlhf.reward.losses import DIRECT_LOSSES
from rlhf.reward.train import accumulation
from rlhf.runtime import MetricsLog, autocast, setup
from rlhf.state import load_state, save_state

STEP_KEYS = ("loss", "accuracy", "margin", "logratio_chosen", "logratio_rejected",
             "logp_chosen", "logp_rejected")


def micro_batch(model, data, ref: dict, idx: list[int], cfg: DPOTrainConfig, device) -> dict:
    """Mean loss of pairs `idx` and their per-pair numbers (detached), one packed forward."""
    with autocast(cfg.runtime, device):
        pc, pr = pair_logprobs(model, [data.chosen[i] for i in idx],
                               [data.rejected[i] for i in idx], device)  # (b,), (b,)
    hc = pc - ref["train.chosen"][idx].to(device)  # (b,) log-ratios
    hr = pr - ref["train.rejected"][idx].to(device)
    t, m = data.target[idx].to(device), data.margin[idx].to(device)
    loss = DIRECT_LOSSES[cfg.loss.kind](hc, hr, cfg.loss.beta, t, m,
                                        cfg.loss.label_smoothing).mean()
    clear = (t == 1.0).float()
    d = (hc - hr).detach()
    n_clear = clear.sum().clamp(min=1)
    return {"loss": loss, "accuracy": ((d > 0).float() * clear).sum() / n_clear,
            "margin": cfg.loss.beta * d.mean(), "logratio_chosen": hc.detach().mean(),
            "logratio_rejected": hr.detach().mean(), "logp_chosen": pc.detach().mean(),
            "logp_rejected": pr.detach().mean()}


def train_step(model, opt, data, ref, batch, cfg, info, accum, device) -> dict:
    """One optimiser step on this rank's shard of a global batch; metrics are global means."""
    mine = dist.shard(batch, info)
    micro = len(mine) // accum
    sums = {k: torch.zeros((), device=device) for k in STEP_KEYS}
    for k in range(accum):
        idx = mine[k * micro:(k + 1) * micro]
        with dist.no_grad_sync(model, skip=k < accum - 1):  # reduce on the last one only
            m = micro_batch(model, data, ref, idx, cfg, device)
            (m["loss"] / accum).backward()
        for key in STEP_KEYS:
            sums[key] += m[key].detach() / accum
    gnorm = clip_gradients(model, cfg.train.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    out = {k: float(dist.all_reduce_mean(v, info)) for k, v in sums.items()}
    return {**out, "grad_norm": float(dist.full_tensor(gnorm))}


def validate(policy, val, ref: dict, cfg: DPOTrainConfig, device) -> dict:
    """Held-out implicit-reward metrics (`rlhf.reward.evaluate.pair_metrics`) and drift."""
    if not len(val):
        return {}
    r_c, r_r, _, _ = pair_rewards(policy, None, val, cfg.loss.beta, device,
                                  cfg.train.eval_batch_size,
                                  (ref["val.chosen"], ref["val.rejected"]))
    out = {f"val_{k}": v for k, v in metrics_of(r_c, r_r, val).items()
           if not isinstance(v, dict)}
    return {**out, "val_logratio_chosen": float(r_c.mean()) / cfg.loss.beta,
            "val_logratio_rejected": float(r_r.mean()) / cfg.loss.beta}


def reference_pass(cfg: DPOTrainConfig, parts: dict, out: Path, info) -> dict:
    """Step 3: rank 0 computes (or reads) the cache, then every rank reads the file."""
    name = cfg.model.reference or cfg.model.init
    if info.is_main:
        ref_model = load_model(name)[0].to(info.device).eval()
        with autocast(cfg.runtime, info.device):
            reference_logprobs(ref_model, parts, out, name, cfg.data.max_len, info.device,
                               cfg.train.eval_batch_size)
        del ref_model
    dist.barrier(info)
    return reference_logprobs(None, parts, out, name, cfg.data.max_len, info.device)


def train(cfg: DPOTrainConfig) -> dict:
    """Train a policy on comparisons as `cfg` says; returns a summary (module docstring)."""
    # 1. processes, seeds, run folder
    info = dist.init(cfg.runtime.device)
    device = info.device
    setup(cfg.runtime)
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    accum = accumulation(cfg.train, info.world_size)
    # 2. data, split by prompt
    policy, tok = load_model(cfg.model.init)
    train_d, val_d = prepare_data(cfg, tok)
    per_epoch = len(train_d) // cfg.train.batch_size
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
    # 3. the reference log-probs of every pair, once (cached in the run folder)
    ref = reference_pass(cfg, {"train": train_d, "val": val_d}, out, info)
    # 4. policy, optimiser, resume
    policy.to(device).train()
    model = dist.wrap(policy, info, cfg.runtime.parallel)  # FSDP shards `policy` in place
    opt = make_optimizer(policy, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
    step, best = 0, {"val_accuracy": float("nan")}
    log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    if cfg.resume and (out / "state").is_dir():
        meta, _ = load_state(out / "state", {"policy": policy}, {"opt": opt})
        step, best = meta["step"], meta["best"]
    if info.is_main:  # drop rows after the checkpoint (all of them on a fresh start)
        log.truncate_after(step)
        log.write(event="data", step=step, train_pairs=len(train_d), val_pairs=len(val_d),
                  truncated_pairs=train_d.truncated + val_d.truncated, total_steps=total,
                  world_size=info.world_size, loss=cfg.loss.kind, beta=cfg.loss.beta)
    # 5. steps
    bar = tqdm(range(step, total), initial=step, total=total, desc="dpo",
               disable=not (cfg.progress and info.is_main and sys.stderr.isatty()))
    order, order_epoch, t0, n0 = None, -1, time.time(), step
    for step in bar:
        if step // per_epoch != order_epoch:
            order_epoch = step // per_epoch
            order = epoch_batches(train_d.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                                  order_epoch, cfg.train.group_by_length)
        lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
        set_lr(opt, lr)
        m = train_step(model, opt, train_d, ref, order[step % per_epoch], cfg, info, accum,
                       device)
        done = step + 1
        row = {"step": done, "lr": lr, **m,
               "pairs_per_s": (done - n0) * cfg.train.batch_size / (time.time() - t0)}
        if (cfg.train.eval_every and done % cfg.train.eval_every == 0) or done == total:
            best = evaluate_and_log(policy, val_d, ref, cfg, info, row, best)
        log.write(**row)
        bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.2f}")
        stop = cfg.train.stop_at and done >= cfg.train.stop_at and done < total
        if (cfg.train.save_every and done % cfg.train.save_every == 0) or done == total or stop:
            checkpoint(out, policy, opt, done, best, info)
        if stop:
            bar.close()
            return {"stopped_at": done, "steps": total, "state": str(out / "state")}
    # 6. the policy (+ dpo.json), summary, plots
    return finish(cfg, policy, tok, train_d, val_d, ref, out, info, best, total)


def evaluate_and_log(policy, val_d, ref, cfg, info, row: dict, best: dict) -> dict:
    """Validation on rank 0 (all ranks under FSDP: forward passes are collective)."""
    if info.is_main or dist.is_sharded(policy):
        row.update(validate(policy, val_d, ref, cfg, info.device))
        acc = row.get("val_accuracy", float("nan"))
        if not best["val_accuracy"] >= acc:  # also replaces nan
            best = {"val_accuracy": acc, "step": row["step"]}
    dist.barrier(info)
    return best


def checkpoint(out: Path, policy, opt, step: int, best: dict, info) -> None:
    if info.is_main or dist.is_sharded(policy):  # FSDP: every rank gathers, rank 0 writes
        save_state(out / "state", {"policy": policy}, {"opt": opt},
                   {"step": step, "best": best, "world_size": info.world_size},
                   write=info.is_main)
    dist.barrier(info)


def finish(cfg, policy, tok, train_d, val_d, ref, out, info, best, total) -> dict:
    reference = str(Path(cfg.model.reference or cfg.model.init).resolve())
    summary = {"policy": str(out / "policy"), "steps": total, "train_pairs": len(train_d),
               "val_pairs": len(val_d), "truncated_pairs": train_d.truncated + val_d.truncated,
               "loss": cfg.loss.kind, "beta": cfg.loss.beta, "reference": reference,
               "best_val_accuracy": best.get("val_accuracy"), "best_step": best.get("step")}
    if info.is_main or dist.is_sharded(policy):
        policy.eval()
        save_dpo_policy(policy, tok, out / "policy",
                        {"reference": reference, "beta": cfg.loss.beta, "loss": cfg.loss.kind,
                         "max_len": cfg.data.max_len, "trained_steps": total},
                        write=info.is_main)
        last = validate(policy, val_d, ref, cfg, info.device)
        summary.update({f"last_{k}": last.get(k) for k in (
            "val_accuracy", "val_length_rule_accuracy", "val_ece", "val_loss",
            "val_mean_margin", "val_logratio_chosen", "val_logratio_rejected")})
        if info.is_main:
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            plot_run(out)
    dist.barrier(info)
    return summary


def cli(argv: list[str]) -> int:
    cfg = parse_cli(DPOTrainConfig, "rlhf train-dpo", __doc__, argv)
    info = dist.init(cfg.runtime.device)
    summary = train(cfg)
    if info.is_main:
        print(json.dumps(summary))
    dist.finish(info)
    return 0
