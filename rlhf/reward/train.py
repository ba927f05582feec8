"""`rlhf train-reward CONFIG [overrides]`: fit a reward model to pairwise comparisons (and the
pairs of rankings, corrections and ratings: `data.kinds`).

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder (`rlhf.harness.run`);
2. data: comparison stores / imported files -> pairs (each with its weight: 1 / (K choose 2)
   for a K-ranking's) -> train/validation split *by prompt*
   (no prompt on both sides) -> token ids, truncated by the stated rule and counted
   (`rlhf.preferences.data`);
3. model (from a policy folder or a previous reward model), AdamW, resume from `state/`;
4. steps: the global batch of step s is a pure function of (seed, s) (shuffled, then grouped by
   length so a batch is padded only as far as it needs); each rank takes its `shard`, splits
   it into micro-batches (gradient accumulation), chosen and rejected in one forward pass
   with their shared prompt computed once (`rlhf.preferences.tokens.pack_pairs`);
   loss = sum(w loss) / sum(w) over the global batch (`weighted_mean`); warmup + cosine
   learning rate; validation every `eval_every` steps (every pair counted once); checkpoints;
5. normalisation statistics on the training responses, the saved model, a summary (the
   held-out accuracy with its 95% interval by the bootstrap over prompts, the length rules,
   the length-controlled accuracy and the beyond-length test: `rlhf.preferences.length`).

Distributed (torchrun, gloo on CPU / nccl on CUDA): every rank builds the same global batch,
DDP averages the gradients of per-rank means over equal shards, which equals the gradient of
the global mean. The data position is the global step, so a run resumes with another number
of processes. Only rank 0 writes.
"""

from __future__ import annotations

import math

import torch

from rlhf.config import ConfigError, require_fits
from rlhf.harness import distributed as dist
from rlhf.harness.optim import lr_at, make_optimizer, set_lr
from rlhf.harness.run import Handover, accumulated_step, accumulation, stage_cli, training_run
from rlhf.harness.runtime import autocast
from rlhf.lm.cards import set_metrics
from rlhf.lm.lora import checkpointed, with_lora
from rlhf.lm.memory import apply_memory
from rlhf.preferences.data import EncodedPairs, PairBatches, prepare_data
from rlhf.preferences.length import logistic_fit
from rlhf.preferences.losses import (
    centring_penalty,
    davidson_loss,
    initial_log_nu,
    odin_losses,
    preference_loss,
    weighted_mean,
    with_length_term,
)
from rlhf.preferences.tokens import pack_pairs, pad_right
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.evaluate import evaluate_encoded
from rlhf.reward.model import (
    bootstrap_weights,
    init_reward_model,
    save_reward_model,
    set_statistics,
)
from rlhf.reward.probe import cache_features

# ----------------------------------------------------------------------------- one step


def micro_batch_loss(model, data: EncodedPairs, idx: list[int], weights: torch.Tensor,
                     cfg: RewardTrainConfig, device, mean_weight: float | None = None) -> dict:
    """Weighted mean loss of pairs `idx` (members' bootstrap `weights`; pair weights
    `data.weight` by `weighted_mean`, `mean_weight` the global batch's), chosen and rejected
    in one forward with their shared prompt computed once (`pack_pairs`), the training
    accuracy (clear pairs whose ensemble-mean score difference is positive; every pair
    counted once) and the mean score difference (margin)."""
    b, rm = len(idx), getattr(model, "module", model)
    chosen, rejected = [data.chosen[i] for i in idx], [data.rejected[i] for i in idx]
    with autocast(cfg.runtime, device):
        if data.features is not None:  # frozen encoder: features pooled once (reward.probe)
            f = data.features[idx].to(device)  # (b, 2, dim)
            r = model(None, pooled=torch.cat([f[:, 0], f[:, 1]]), both=True)  # (2b, E|2E)
        elif rm.is_encoder:  # a cross-encoder sees each side whole: two rows per pair
            tokens, mask = pad_right(chosen + rejected, rm.backbone.args.pad_id)
            r = model(tokens.to(device), mask.to(device), both=True)  # (2b, E|2E)
        else:
            packed = pack_pairs(chosen, rejected, 0, device)  # rows (b, T)
            r = model(packed.tokens, packed=packed, both=True)  # (2b, E|2E): chosen, rejected
    r, r_q, penalty, logs = length_terms(rm, r, data, idx, cfg)  # (2b, E) fitted, quality
    rc, rr = r[:b], r[b:]  # (b, E)
    target, margin = data.target[idx].to(device), data.margin[idx].to(device)
    if cfg.data.ties == "model":  # Davidson: a 1/2 target is an observed tie
        loss = davidson_loss(rc, rr, target == 0.5, rm.log_nu, margin)
    else:
        loss = preference_loss(rc, rr, target, margin)
    if cfg.loss.centring > 0:
        loss = loss + cfg.loss.centring * centring_penalty(r_q[:b], r_q[b:])  # what is read
    loss = weighted_mean(loss * weights[idx].to(device), data.weight[idx].to(device),
                         mean_weight) + penalty
    d, clear = (r_q[:b] - r_q[b:]).mean(-1).detach(), target == 1.0  # (b,), (b,)
    return {"loss": loss, "accuracy": ((d > 0) & clear).float().sum() / clear.sum().clamp(min=1),
            "margin": d.mean(), **logs}


def length_terms(rm, r: torch.Tensor, data: EncodedPairs, idx: list[int], cfg: RewardTrainConfig):
    """-> (the scores the preference loss fits, the quality scores that accuracy and every
    reader use, the added penalty, figures to log). Without a length head or term: (r, r, 0,
    {}). With a length term (`model.length_term`): quality + coefficient x length / 100
    (`with_length_term`). With a length head (ODIN), r (2b, 2E) holds [quality | length] of
    the chosen rows then the rejected: the loss fits quality + length, plus ODIN's weighted
    regularisers."""
    coef = getattr(rm, "length_coef", None)
    if rm.length_head is None and coef is None:
        return r, r, 0.0, {}
    length = torch.tensor([data.len_chosen[i] for i in idx] + [data.len_rejected[i] for i in idx],
                          dtype=torch.float32, device=r.device)  # (2b,) characters
    if coef is not None:
        return with_length_term(r, length / 100, coef), r, 0.0, {
            "length_coef": coef.detach().mean()}
    E = rm.n_members
    r_q, r_l = r[:, :E], r[:, E:]  # (2b, E) each
    length_loss, ortho = odin_losses(r_q, r_l, length, rm.head.weight, rm.length_head.weight)
    penalty = cfg.loss.length_weight * length_loss + cfg.loss.orthogonal_weight * ortho
    return r_q + r_l, r_q, penalty, {"length_loss": length_loss.detach(),
                                     "orthogonal_loss": ortho.detach()}


def prepare_model(rm, train_d: EncodedPairs, cfg: RewardTrainConfig) -> None:
    """model.train_backbone=false: a linear probe (only heads, and nu, get gradients).
    ties=model: Davidson's nu, started where P(tie | d = 0) is the training tie rate.
    model.gradient_checkpointing / model.dtype: rlhf.lm.memory."""
    lora_backbone(rm, cfg)
    if not cfg.model.train_backbone:
        rm.backbone.requires_grad_(False)
    if cfg.model.length_head:
        rm.add_length_head(cfg.runtime.seed)
    else:
        rm.length_head = None
    if cfg.model.length_term and getattr(rm, "length_coef", None) is None:
        rm.add_length_term(length_only_fit(train_d))
    elif not cfg.model.length_term:
        rm.length_coef = None
    if cfg.data.ties == "model":
        rm.add_tie_parameter(initial_log_nu(float((train_d.target == 0.5).float().mean())))
    apply_memory(rm, cfg.model)  # checkpointing; the frozen backbone in bf16 if asked


def lora_backbone(rm, cfg: RewardTrainConfig) -> None:
    """model.lora: adapters on a causal backbone, its base frozen, the heads trained in full
    (rlhf.lm.lora); the saved reward model is merged. Not for encoders, nor with a probe."""
    if cfg.model.lora.rank and (rm.is_encoder or not cfg.model.train_backbone):
        raise ConfigError("model.lora.rank: LoRA adapts a causal backbone that trains "
                          f"({'an encoder' if rm.is_encoder else 'train_backbone is false'})")
    if not rm.is_encoder:
        with_lora(rm.backbone, cfg.model.lora)  # (rank 0: an adapter folder's merged)
        if not rm.backbone.args.tie_embeddings:  # the LM head stays unused and frozen
            rm.backbone.output.weight.requires_grad_(False)


def length_only_fit(data: EncodedPairs) -> float:
    """The coefficient of (chosen - rejected) length per 100 characters in a logistic
    regression of the preference on length alone (`logistic_fit`, ties as 1/2): where
    `model.length_term` starts, so that from the first step the quality head sees the
    preferences with the raters' taste for length already accounted for."""
    d = (torch.tensor(data.len_chosen, dtype=torch.float64)
         - torch.tensor(data.len_rejected, dtype=torch.float64)) / 100  # (N,)
    beta, _, _ = logistic_fit(d[:, None], data.target.to(torch.float64))
    return float(beta[0])


def set_rates(opt: torch.optim.Optimizer, lr: float, cfg: RewardTrainConfig) -> None:
    """This step's rate everywhere; a scalar parameter's group (`own_group`) its own peak
    rate on the same schedule."""
    set_lr(opt, lr)
    for group in opt.param_groups:
        if "peak_lr" in group:
            group["lr"] = lr * group["peak_lr"] / cfg.train.lr


def reward_optimizer(rm, cfg: RewardTrainConfig) -> torch.optim.Optimizer:
    """AdamW (rlhf.harness.optim); Davidson's tie parameter (ties=model) and the length
    coefficients (`model.length_term`) each in a group of their own."""
    opt = make_optimizer(rm, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
    if cfg.data.ties == "model":
        own_group(opt, rm.log_nu, cfg.loss.tie_lr)
    if getattr(rm, "length_coef", None) is not None:
        own_group(opt, rm.length_coef, cfg.loss.length_lr)
    return opt


def own_group(opt: torch.optim.Optimizer, param: torch.nn.Parameter, peak_lr: float) -> None:
    """Move a parameter (Davidson's tie parameter, the length coefficients) into a parameter
    group of its own: scalars on their own scale need a larger rate than a pretrained
    backbone (`loss.tie_lr`, `loss.length_lr`; `set_rates`)."""
    for group in opt.param_groups:
        group["params"] = [p for p in group["params"] if p is not param]
    opt.add_param_group({"params": [param], "weight_decay": 0.0, "peak_lr": peak_lr})


# ----------------------------------------------------------------------------- the loop


def validate(rm, val: EncodedPairs, tok, cfg) -> dict:
    if not len(val):
        return {}
    out = evaluate_encoded(rm, val.chosen, val.rejected, val.target, val.len_chosen,
                           val.len_rejected, tok.pad_id, cfg.train.eval_batch_size, val.group,
                           cfg.runtime.seed)
    return {f"val_{k}": v for k, v in out.items() if not isinstance(v, dict)}


def train(cfg: RewardTrainConfig, hand: Handover | None = None) -> dict:
    """Train a reward model as `cfg` says; returns a summary (see the module docstring).
    `hand.start`: the (reward model, tokenizer) to start from instead of `model.init`;
    `hand.trained` receives the trained one (the loop keeps models in memory)."""
    hand = hand or Handover()
    # 1. processes, seeds, run folder
    with training_run(cfg, "reward") as run:
        accum = accumulation(cfg.train.batch_size, cfg.train.micro_batch_size,
                             run.info.world_size)
        # 2. data, split by prompt
        m = cfg.model
        rm, tok = hand.start or init_reward_model(m.init, m.n_members, cfg.runtime.seed, m.pooling,
                                             m.backbone)
        train_d, val_d = prepare_data(cfg, tok)
        weights, total = _weights_and_steps(cfg, train_d)
        prepare_model(rm, train_d, cfg)
        if not m.train_backbone and rm.is_encoder:  # a probe: pool each side once, not per epoch
            cache_features(rm.to(run.device), train_d, tok.pad_id, cfg.train.eval_batch_size)
        # 3. model (DDP replica or FSDP shards), optimiser, resume
        rm.to(run.device).train()
        model = dist.wrap(rm, run.info, cfg.runtime.parallel)  # FSDP shards `rm` in place
        opt = reward_optimizer(rm, cfg)
        run.resume({"rm": checkpointed(rm)}, {"opt": opt})  # LoRA: adapters and heads
        run.log.write(event="data", step=run.step, train_pairs=len(train_d),
                      val_pairs=len(val_d), truncated_pairs=train_d.truncated + val_d.truncated,
                      total_steps=total, world_size=run.info.world_size, sharded=run.sharded)
        # 4. steps
        batches = PairBatches(train_d.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                              cfg.train.group_by_length)
        for step in run.steps(total, cfg.train.save_every, cfg.train.stop_at):
            lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
            set_rates(opt, lr, cfg)
            batch = batches(step)
            mean_w = float(train_d.weight[batch].mean())  # the global batch's, for every rank
            m = accumulated_step(model, opt, batch, accum, lambda idx, mw=mean_w: micro_batch_loss(
                model, train_d, idx, weights, cfg, run.device, mw), cfg.train.max_grad_norm,
                run.info)
            row = {"step": step + 1, "lr": lr, **m,
                   "pairs_per_s": run.per_second(step + 1, cfg.train.batch_size)}
            run.validate(row, lambda: validate(rm, val_d, tok, cfg), cfg.train.eval_every)
            if run.end_step(row, show={"loss": m["loss"], "acc": m["accuracy"], **(
                    {"val_acc": row["val_accuracy"]} if "val_accuracy" in row else {})}):
                return run.stopped()
        # 5. statistics, saved model, summary
        hand.trained = (rm, tok)
        return run.finish(_finish(cfg, rm, tok, train_d, val_d, run, total))


def _weights_and_steps(cfg: RewardTrainConfig, train_d: EncodedPairs):
    """(2) The members' bootstrap weights (pairs, E) and the number of steps."""
    require_fits(cfg.train.batch_size, len(train_d), "train.batch_size", "training pairs")
    weights = (bootstrap_weights(len(train_d), cfg.model.n_members, cfg.runtime.seed)
               if cfg.model.bootstrap else torch.ones(len(train_d), cfg.model.n_members))
    per_epoch = len(train_d) // cfg.train.batch_size
    return weights, cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))


AUDIT_KEYS = ("accuracy_ci95", "shorter_rule_accuracy", "length_rule_accuracy_ci95",
              "shorter_rule_accuracy_ci95", "minus_longer_rule", "minus_longer_rule_ci95",
              "minus_shorter_rule", "minus_shorter_rule_ci95", "length_controlled_accuracy",
              "length_controlled_accuracy_ci95", "beyond_length_coef",
              "beyond_length_coef_ci95", "beyond_length_p", "beyond_length_p_robust", "prompts",
              "score_length_corr")
"""The held-out length audit's figures (`rlhf.preferences.length.length_audit`) kept in the
summary as `last_val_<key>` beside `last_val_accuracy`."""


def _finish(cfg, rm, tok, train_d, val_d, run, total) -> dict:
    """(5) Normalisation statistics, the saved model (`run.writes` ranks), the summary (with
    the held-out accuracy's 95% interval and the length audit: `AUDIT_KEYS`)."""
    best = run.best
    summary = {"model": str(run.out / "model"), "steps": total, "train_pairs": len(train_d),
               "val_pairs": len(val_d), "truncated_pairs": train_d.truncated + val_d.truncated,
               "best_val_accuracy": best.get("val_accuracy"), "best_step": best.get("step")}
    if run.writes:  # FSDP: every rank runs the passes, rank 0 writes
        rm.eval()
        n = min(len(train_d), 512)  # statistics on (up to) 2 x 512 training responses
        set_statistics(rm, train_d.chosen[:n] + train_d.rejected[:n], tok.pad_id,
                       cfg.train.eval_batch_size)
        rm.max_len = cfg.data.max_len
        save_reward_model(rm, tok, run.out / "model", {
            "trained_steps": total, "base_model": cfg.model.backbone or cfg.model.init,
            "data": list(cfg.data.paths)}, write=run.info.is_main)
        last = validate(rm, val_d, tok, cfg)
        summary.update(last_val_accuracy=last.get("val_accuracy"),
                       last_val_length_rule_accuracy=last.get("val_length_rule_accuracy"),
                       last_val_ece=last.get("val_ece"), last_val_loss=last.get("val_loss"),
                       score_mean=float(rm.mean), score_std=float(rm.std))
        if getattr(rm, "length_coef", None) is not None:  # per 100 characters, per member
            summary["length_coef"] = [round(c, 4) for c in rm.length_coef.tolist()]
        summary.update({f"last_val_{k}": last[f"val_{k}"] for k in AUDIT_KEYS
                        if f"val_{k}" in last})
        if run.info.is_main:  # the model card's held-out figures
            set_metrics(run.out / "model", {k: v for k, v in summary.items() if k.startswith(
                "last_val_") and isinstance(v, (int, float))})
    return summary


def cli(argv: list[str]) -> int:
    return stage_cli(RewardTrainConfig, train, "rlhf train-reward", __doc__, argv)
