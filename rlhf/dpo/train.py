"""`rlhf train-dpo CONFIG [overrides]`: fine-tune a policy directly on pairwise comparisons
(and the pairs of rankings, corrections and ratings: `data.kinds`) (DPO, Rafailov et al.
2023; IPO, Azar et al. 2023), no reward model.

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder (`rlhf.harness.run`);
2. data (`rlhf.preferences.data`, as the reward stage): stores / imported files -> pairs (ties
   1/2 or dropped, strength margins, weights 1 / (K choose 2) for a K-ranking's pairs) ->
   split *by prompt* -> token ids;
3. the reference pass: pi_ref's log-probs of every pair, once, cached in the run folder
   (`rlhf.dpo.pairs.reference_logprobs`; recomputed only if the pairs or reference change);
4. policy (DDP replica or FSDP shards), AdamW, resume from `state/`;
5. steps: the global batch of step s is a pure function of (seed, s); each rank takes its
   shard, cut into micro-batches; chosen and rejected in one packed forward pass (shared
   prompt once); loss = `rlhf.preferences.losses.dpo_loss` / `ipo_loss` of the log-ratios
   against the cached reference, reduced by `weighted_mean` (sum(w loss) / sum(w) over the
   global batch); validation (held-out implicit-reward accuracy) every
   `eval_every`;
6. the policy folder (+ dpo.json: reference, beta), summary.json and dpo.png.

Metrics per step: loss, accuracy (implicit reward ranks the pair right, clear pairs), margin
(mean beta (h_c - h_r)), logratio_chosen / logratio_rejected (mean h: how far each side's
log-prob drifted from the reference), logp_chosen / logp_rejected, grad_norm, pairs_per_s.
Distributed as the reward stage: DDP averages per-rank means over equal shards; the data
position is the global step, so a run resumes with another number of processes.
"""

from __future__ import annotations

import math
from pathlib import Path

from rlhf.dpo.config import DPOTrainConfig
from rlhf.dpo.implicit import metrics_of, pair_rewards, save_dpo_policy
from rlhf.dpo.pairs import pair_logprobs, reference_logprobs
from rlhf.dpo.report import plot_run
from rlhf.harness import distributed as dist
from rlhf.harness.optim import lr_at, make_optimizer, set_lr
from rlhf.harness.progress import Progress
from rlhf.harness.run import Handover, accumulated_step, accumulation, stage_cli, training_run
from rlhf.harness.runtime import autocast
from rlhf.lm.cards import set_metrics
from rlhf.lm.folders import adapter_base, load_model, save_adapter_folder
from rlhf.lm.lora import checkpointed, has_lora, shared_reference, with_lora
from rlhf.lm.memory import apply_memory
from rlhf.preferences.data import PairBatches, prepare_data
from rlhf.preferences.losses import DIRECT_LOSSES, weighted_mean


def micro_batch(model, data, ref: dict, idx: list[int], cfg: DPOTrainConfig, device,
                mean_weight: float | None = None) -> dict:
    """Weighted mean loss of pairs `idx` (`weighted_mean`, `mean_weight` the global batch's)
    and their per-pair numbers (detached, every pair counted once), one packed forward."""
    with autocast(cfg.runtime, device):
        pc, pr = pair_logprobs(model, [data.chosen[i] for i in idx],
                               [data.rejected[i] for i in idx], device)  # (b,), (b,)
    hc = pc - ref["train.chosen"][idx].to(device)  # (b,) log-ratios
    hr = pr - ref["train.rejected"][idx].to(device)
    t, m = data.target[idx].to(device), data.margin[idx].to(device)
    loss = weighted_mean(DIRECT_LOSSES[cfg.loss.kind](hc, hr, cfg.loss.beta, t, m,
                                                      cfg.loss.label_smoothing),
                         data.weight[idx].to(device), mean_weight)
    clear = (t == 1.0).float()
    d = (hc - hr).detach()
    n_clear = clear.sum().clamp(min=1)
    return {"loss": loss, "accuracy": ((d > 0).float() * clear).sum() / n_clear,
            "margin": cfg.loss.beta * d.mean(), "logratio_chosen": hc.detach().mean(),
            "logratio_rejected": hr.detach().mean(), "logp_chosen": pc.detach().mean(),
            "logp_rejected": pr.detach().mean()}


def validate(policy, val, ref: dict, cfg: DPOTrainConfig, device) -> dict:
    """Held-out implicit-reward metrics (`rlhf.preferences.metrics.pair_metrics`), drift."""
    if not len(val):
        return {}
    r_c, r_r, _, _ = pair_rewards(policy, None, val, cfg.loss.beta, device,
                                  cfg.train.eval_batch_size,
                                  (ref["val.chosen"], ref["val.rejected"]))
    out = {f"val_{k}": v for k, v in metrics_of(r_c, r_r, val).items()
           if not isinstance(v, dict)}
    return {**out, "val_logratio_chosen": float(r_c.mean()) / cfg.loss.beta,
            "val_logratio_rejected": float(r_r.mean()) / cfg.loss.beta}


def reference_pass(cfg: DPOTrainConfig, parts: dict, out: Path, info, ref_model=None) -> dict:
    """Step 3: rank 0 computes (or reads) the cache, then every rank reads the file.
    `ref_model`: the reference when the caller holds it, instead of loading it."""
    name = cfg.model.reference or cfg.model.init
    if info.is_main:
        model = (ref_model or apply_memory(load_model(name)[0].requires_grad_(False),
                                           cfg.model)).to(info.device).eval()
        pairs = sum(len(d) for d in parts.values())  # a cached pass reports none
        with autocast(cfg.runtime, info.device), \
                Progress("dpo reference", pairs, enabled=cfg.progress):
            reference_logprobs(model, parts, out, name, cfg.data.max_len, info.device,
                               cfg.train.eval_batch_size)
    dist.barrier(info)
    return reference_logprobs(None, parts, out, name, cfg.data.max_len, info.device)


def train(cfg: DPOTrainConfig, hand: Handover | None = None) -> dict:
    """Train a policy on comparisons as `cfg` says; returns a summary (module docstring).
    `hand.start` / `hand.reference`: the policy and reference when the caller holds them
    (the loop), instead of `model.init` / `model.reference`; `hand.trained` receives the
    trained policy."""
    hand = hand or Handover()
    # 1. processes, seeds, run folder
    with training_run(cfg, "dpo") as run:
        accum = accumulation(cfg.train.batch_size, cfg.train.micro_batch_size,
                             run.info.world_size)
        # 2. data, split by prompt
        policy, tok = hand.start or load_model(cfg.model.init)
        policy = with_lora(policy, cfg.model.lora)  # LoRA: adapters, frozen base (rlhf.lm.lora)
        train_d, val_d = prepare_data(cfg, tok)
        per_epoch = len(train_d) // cfg.train.batch_size
        total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
        # 3. the reference log-probs of every pair, once (cached in the run folder); with
        # LoRA the policy's own base (adapters off), in the dtype it trains on
        apply_memory(policy, cfg.model)  # checkpointing; frozen weights in bf16
        ref = reference_pass(cfg, {"train": train_d, "val": val_d}, run.out, run.info,
                             hand.reference or shared_reference(policy, cfg.model.reference))
        # 4. policy, optimiser, resume
        policy.to(run.device).train()
        model = dist.wrap(policy, run.info, cfg.runtime.parallel)  # FSDP shards in place
        opt = make_optimizer(policy, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
        run.resume({"policy": checkpointed(policy)}, {"opt": opt})  # LoRA: the adapters
        run.log.write(event="data", step=run.step, train_pairs=len(train_d),
                      val_pairs=len(val_d), truncated_pairs=train_d.truncated + val_d.truncated,
                      total_steps=total, world_size=run.info.world_size, method=cfg.loss.kind,
                      beta=cfg.loss.beta)
        # 5. steps
        batches = PairBatches(train_d.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                              cfg.train.group_by_length)
        for step in run.steps(total, cfg.train.save_every, cfg.train.stop_at):
            lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
            set_lr(opt, lr)
            batch = batches(step)
            mean_w = float(train_d.weight[batch].mean())  # the global batch's, for every rank
            m = accumulated_step(model, opt, batch, accum, lambda idx, mw=mean_w: micro_batch(
                model, train_d, ref, idx, cfg, run.device, mw), cfg.train.max_grad_norm, run.info)
            row = {"step": step + 1, "lr": lr, **m,
                   "pairs_per_s": run.per_second(step + 1, cfg.train.batch_size)}
            run.validate(row, lambda: validate(policy, val_d, ref, cfg, run.device),
                         cfg.train.eval_every)
            if run.end_step(row, show={"loss": m["loss"], "acc": m["accuracy"]}):
                return run.stopped()
        # 6. the policy (+ dpo.json), summary, plots
        hand.trained = (policy, tok)
        summary = run.finish(finish(cfg, policy, tok, train_d, val_d, ref, run, total))
        if run.info.is_main:
            plot_run(run.out)
        return summary


def finish(cfg, policy, tok, train_d, val_d, ref, run, total) -> dict:
    """(6) The policy folder with dpo.json (`run.writes` ranks), the summary."""
    reference = str(Path(cfg.model.reference or (adapter_base(cfg.model.init) if has_lora(
        policy) else cfg.model.init)).resolve())  # LoRA: the base, adapters off
    best = run.best
    summary = {"policy": str(run.out / "policy"), "steps": total, "train_pairs": len(train_d),
               "val_pairs": len(val_d), "truncated_pairs": train_d.truncated + val_d.truncated,
               "loss": cfg.loss.kind, "beta": cfg.loss.beta, "reference": reference,
               "best_val_accuracy": best.get("val_accuracy"), "best_step": best.get("step")}
    if run.writes:
        policy.eval()
        meta = {"reference": reference, "beta": cfg.loss.beta, "loss": cfg.loss.kind,
                "max_len": cfg.data.max_len, "trained_steps": total,
                "init": cfg.model.init, "data": list(cfg.data.paths)}  # (the model card's)
        save_dpo_policy(policy, tok, run.out / "policy", meta, write=run.info.is_main)
        if has_lora(policy):  # LoRA: the policy folder is merged; the peft adapter beside it
            summary["adapter"] = str(save_adapter_folder(
                policy, tok, run.out / "adapter", cfg.model.init, {"dpo.json": meta},
                write=run.info.is_main))
        last = validate(policy, val_d, ref, cfg, run.device)
        set_metrics(run.out / "policy", last, write=run.info.is_main)  # the model card's
        summary.update({f"last_{k}": last.get(k) for k in (
            "val_accuracy", "val_length_rule_accuracy", "val_ece", "val_loss",
            "val_mean_margin", "val_logratio_chosen", "val_logratio_rejected")})
    return summary


def cli(argv: list[str]) -> int:
    return stage_cli(DPOTrainConfig, train, "rlhf train-dpo", __doc__, argv)
