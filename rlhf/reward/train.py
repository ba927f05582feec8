"""`rlhf train-reward CONFIG [overrides]`: fit a reward model to pairwise comparisons.

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder;
2. data: comparison stores / imported files -> pairs -> train/validation split *by prompt*
   (no prompt on both sides) -> token ids, truncated by the stated rule and counted;
3. model (from a policy folder or a previous reward model), AdamW, resume from `state/`;
4. steps: the global batch of step s is a pure function of (seed, s) (shuffled, then grouped by
   length so a batch is padded only as far as it needs); each rank takes its `shard`, splits
   it into micro-batches (gradient accumulation), chosen and rejected in one forward pass
   with their shared prompt computed once (`reward_model.pack_pairs`);
   warmup + cosine learning rate; validation every `eval_every` steps; checkpoints;
5. normalisation statistics on the training responses, the saved model, a summary.

Distributed (torchrun, gloo on CPU / nccl on CUDA): every rank builds the same global batch,
DDP averages the gradients of per-rank means over equal shards, which equals the gradient of
the global mean. The data position is the global step, so a run resumes with another number
of processes. Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from rlhf import distributed as dist
from rlhf.config import ConfigError, parse_cli, require_fits
from rlhf.optim import clip_gradients, lr_at, make_optimizer, set_lr
from rlhf.progress import Progress
from rlhf.reward.config import RewardOptimConfig, RewardTrainConfig
from rlhf.reward.data import EncodedPairs, epoch_batches, prepare_data
from rlhf.reward.evaluate import evaluate_encoded
from rlhf.reward.losses import (
    centring_penalty,
    davidson_loss,
    initial_log_nu,
    preference_loss,
)
from rlhf.reward.model import (
    bootstrap_weights,
    init_reward_model,
    pack_pairs,
    pad_right,
    save_reward_model,
    set_statistics,
)
from rlhf.reward.probe import cache_features
from rlhf.runfolder import Interrupted, holds_run_folder, save_run_config, stop_signal
from rlhf.runtime import MetricsLog, autocast, setup
from rlhf.state import has_state, load_state, require_finite, save_state

# ----------------------------------------------------------------------------- one step


def micro_batch_loss(model, data: EncodedPairs, idx: list[int], weights: torch.Tensor,
                     cfg: RewardTrainConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean weighted loss of pairs `idx`, chosen and rejected in one forward with their
    shared prompt computed once (`pack_pairs`); also the per-pair ensemble-mean score
    difference (b,) for training accuracy."""
    b, rm = len(idx), getattr(model, "module", model)
    chosen, rejected = [data.chosen[i] for i in idx], [data.rejected[i] for i in idx]
    with autocast(cfg.runtime, device):
        if data.features is not None:  # frozen encoder: features pooled once (reward.probe)
            f = data.features[idx].to(device)  # (b, 2, dim)
            r = model(None, pooled=torch.cat([f[:, 0], f[:, 1]]))  # (2b, E)
        elif rm.is_encoder:  # a cross-encoder sees each side whole: two rows per pair
            tokens, mask = pad_right(chosen + rejected, rm.backbone.args.pad_id)
            r = model(tokens.to(device), mask.to(device))  # (2b, E)
        else:
            packed = pack_pairs(chosen, rejected, 0, device)  # rows (b, T)
            r = model(packed.tokens, packed=packed)  # (2b, E): chosen rows, then rejected
    rc, rr = r[:b], r[b:]  # (b, E)
    target, margin = data.target[idx].to(device), data.margin[idx].to(device)
    if cfg.data.ties == "model":  # Davidson: a 1/2 target is an observed tie
        loss = davidson_loss(rc, rr, target == 0.5, rm.log_nu, margin)
    else:
        loss = preference_loss(rc, rr, target, margin)
    if cfg.loss.centring > 0:
        loss = loss + cfg.loss.centring * centring_penalty(rc, rr)
    loss = (loss * weights[idx].to(device)).mean()
    return loss, (rc.mean(-1) - rr.mean(-1)).detach()


def train_step(model, opt, data, batch, weights, cfg, info, accum, device) -> dict:
    """One optimiser step on this rank's shard of a global batch; metrics are global means."""
    mine = dist.shard(batch, info)
    micro = len(mine) // accum
    total_loss, right = torch.zeros((), device=device), torch.zeros((), device=device)
    for k in range(accum):
        idx = mine[k * micro:(k + 1) * micro]
        with dist.no_grad_sync(model, skip=k < accum - 1):  # reduce on the last one only
            loss, d = micro_batch_loss(model, data, idx, weights, cfg, device)
            (loss / accum).backward()
        total_loss += loss.detach() / accum
        clear = data.target[idx].to(device) == 1.0
        right += ((d > 0) & clear).float().sum() / max(1, int(clear.sum())) / accum
    gnorm = clip_gradients(model, cfg.train.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": float(dist.all_reduce_mean(total_loss, info)),
            "accuracy": float(dist.all_reduce_mean(right, info)),
            "grad_norm": float(dist.full_tensor(gnorm))}


def prepare_model(rm, train_d: EncodedPairs, cfg: RewardTrainConfig) -> None:
    """model.train_backbone=false: a linear probe (only heads, and nu, get gradients).
    ties=model: Davidson's nu, started where P(tie | d = 0) is the training tie rate."""
    if not cfg.model.train_backbone:
        rm.backbone.requires_grad_(False)
    if cfg.data.ties == "model":
        rm.add_tie_parameter(initial_log_nu(float((train_d.target == 0.5).float().mean())))


def set_rates(opt: torch.optim.Optimizer, lr: float, cfg: RewardTrainConfig) -> None:
    """This step's rate everywhere; the tie parameter's group its own peak rate, same shape."""
    set_lr(opt, lr)
    if cfg.data.ties == "model":
        opt.param_groups[-1]["lr"] = lr * cfg.loss.tie_lr / cfg.train.lr


def reward_optimizer(rm, cfg: RewardTrainConfig) -> torch.optim.Optimizer:
    """AdamW (rlhf.optim); with ties=model, the tie parameter in a group of its own."""
    opt = make_optimizer(rm, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
    if cfg.data.ties == "model":
        tie_param_group(opt, rm.log_nu)  # its own rate: set_rates
    return opt


def tie_param_group(opt: torch.optim.Optimizer, log_nu: torch.nn.Parameter) -> None:
    """Move Davidson's tie parameter into a last parameter group of its own: one scalar on
    its own scale, it needs a larger rate than a pretrained backbone (`loss.tie_lr`)."""
    for group in opt.param_groups:
        group["params"] = [p for p in group["params"] if p is not log_nu]
    opt.add_param_group({"params": [log_nu], "weight_decay": 0.0})


def accumulation(cfg: RewardOptimConfig, world: int) -> int:
    """Micro-batches per step on each process; raises ConfigError when sizes do not divide."""
    if cfg.batch_size % world:
        raise ConfigError(f"train.batch_size: {cfg.batch_size} does not divide over {world} "
                          "processes")
    per_rank = cfg.batch_size // world
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise ConfigError(f"train.micro_batch_size: {micro} does not divide the "
                          f"{per_rank} pairs per process")
    return per_rank // micro


# ----------------------------------------------------------------------------- the loop


def validate(rm, val: EncodedPairs, tok, cfg) -> dict:
    if not len(val):
        return {}
    out = evaluate_encoded(rm, val.chosen, val.rejected, val.target, val.len_chosen,
                           val.len_rejected, tok.pad_id, cfg.train.eval_batch_size)
    return {f"val_{k}": v for k, v in out.items() if not isinstance(v, dict)}


@holds_run_folder  # one run per folder (a lock), SIGINT/SIGTERM caught: see rlhf.runfolder
def train(cfg: RewardTrainConfig) -> dict:
    """Train a reward model as `cfg` says; returns a summary (see the module docstring)."""
    # 1. processes, seeds, run folder
    info = dist.init(cfg.runtime.device)
    device = info.device
    setup(cfg.runtime)
    out = Path(cfg.out_dir)
    if info.is_main:
        save_run_config(cfg, out, resuming=cfg.resume and has_state(out / "state"))
    accum = accumulation(cfg.train, info.world_size)
    # 2. data, split by prompt
    m = cfg.model
    rm, tok = init_reward_model(m.init, m.n_members, cfg.runtime.seed, m.pooling, m.backbone)
    train_d, val_d, weights, per_epoch, total = _data(cfg, tok)
    prepare_model(rm, train_d, cfg)
    if not m.train_backbone and rm.is_encoder:  # a probe: pool each side once, not per epoch
        cache_features(rm.to(device), train_d, tok.pad_id, cfg.train.eval_batch_size)
    lengths = train_d.lengths()
    # 3. model (DDP replica or FSDP shards), optimiser, resume
    rm.to(device).train()
    model = dist.wrap(rm, info, cfg.runtime.parallel)  # FSDP shards `rm` in place
    opt = reward_optimizer(rm, cfg)
    step, best, log = _resume(cfg, out, rm, opt, info, train_d, val_d, total)
    # 4. steps
    bar = Progress("reward", total, step, enabled=cfg.progress and info.is_main)
    order, order_epoch, t0, n0 = None, -1, time.time(), step
    for step in range(n0, total):
        epoch = step // per_epoch
        if epoch != order_epoch:
            order = epoch_batches(lengths, cfg.train.batch_size, cfg.runtime.seed, epoch,
                                  cfg.train.group_by_length)
            order_epoch = epoch
        lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
        set_rates(opt, lr, cfg)
        m = train_step(model, opt, train_d, order[step % per_epoch], weights, cfg, info,
                       accum, device)
        done = step + 1
        require_finite(m["loss"], done, "loss", out)
        row = {"step": done, "lr": lr, **m,
               "pairs_per_s": (done - n0) * cfg.train.batch_size / (time.time() - t0)}
        if (cfg.train.eval_every and done % cfg.train.eval_every == 0) or done == total:
            best = _evaluate_and_log(rm, val_d, tok, cfg, info, row, best)
        log.write(**row)
        bar.update(loss=m["loss"], acc=m["accuracy"],
                   **({"val_acc": row["val_accuracy"]} if "val_accuracy" in row else {}))
        stop = cfg.train.stop_at and done >= cfg.train.stop_at and done < total
        sig = stop_signal(info)  # SIGINT/SIGTERM: this step is done; save and leave
        if (cfg.train.save_every and done % cfg.train.save_every == 0) or done == total or stop \
                or sig:
            _checkpoint(out, rm, opt, done, best, info, sig if done < total else 0)
        if stop:
            bar.close()
            return {"stopped_at": done, "steps": total, "state": str(out / "state")}
    # 5. statistics, saved model, summary
    bar.close()
    return _finish(cfg, rm, tok, train_d, val_d, out, info, best, total)


def _data(cfg: RewardTrainConfig, tok):
    """(2) Training and validation pairs, the members' bootstrap weights (pairs, E), steps per
    epoch and in all."""
    train_d, val_d = prepare_data(cfg, tok)
    require_fits(cfg.train.batch_size, len(train_d), "train.batch_size", "training pairs")
    weights = (bootstrap_weights(len(train_d), cfg.model.n_members, cfg.runtime.seed)
               if cfg.model.bootstrap else torch.ones(len(train_d), cfg.model.n_members))
    per_epoch = len(train_d) // cfg.train.batch_size
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
    return train_d, val_d, weights, per_epoch, total


def _resume(cfg, out: Path, rm, opt, info, train_d, val_d, total: int):
    """(3) The metrics log and where the run was: (step, best validation so far, log)."""
    step, best = 0, {"val_accuracy": float("nan")}
    log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    if cfg.resume and has_state(out / "state"):
        meta, _ = load_state(out / "state", {"rm": rm}, {"opt": opt})
        step, best = meta["step"], meta["best"]
    log.truncate_after(step)  # rows after the state (a fresh start: all) are redone
    if info.is_main:
        log.write(event="data", step=step, train_pairs=len(train_d), val_pairs=len(val_d),
                  truncated_pairs=train_d.truncated + val_d.truncated, total_steps=total,
                  world_size=info.world_size, sharded=dist.is_sharded(rm))
    return step, best, log


def _evaluate_and_log(rm, val_d, tok, cfg, info, row: dict, best: dict) -> dict:
    """Validation on rank 0 (others wait; under FSDP every rank runs it, forward passes being
    collective); returns the best validation metrics so far."""
    if info.is_main or dist.is_sharded(rm):
        row.update(validate(rm, val_d, tok, cfg))
        acc = row.get("val_accuracy", float("nan"))
        if not best["val_accuracy"] >= acc:  # also replaces nan
            best = {"val_accuracy": acc, "step": row["step"]}
    dist.barrier(info)
    return best


def _checkpoint(out: Path, rm, opt, step: int, best: dict, info, sig: int = 0) -> None:
    """The state after `step`; then, when a signal asked the run to stop, `Interrupted`."""
    if info.is_main or dist.is_sharded(rm):  # FSDP: every rank gathers, rank 0 writes
        save_state(out / "state", {"rm": rm}, {"opt": opt},
                   {"step": step, "best": best, "world_size": info.world_size},
                   write=info.is_main)
    dist.barrier(info)
    if sig:
        raise Interrupted(sig, f"after step {step} of {out}")


def _finish(cfg, rm, tok, train_d, val_d, out, info, best, total) -> dict:
    summary = {"model": str(out / "model"), "steps": total, "train_pairs": len(train_d),
               "val_pairs": len(val_d), "truncated_pairs": train_d.truncated + val_d.truncated,
               "best_val_accuracy": best.get("val_accuracy"), "best_step": best.get("step")}
    if info.is_main or dist.is_sharded(rm):  # FSDP: every rank runs the passes, 0 writes
        rm.eval()
        n = min(len(train_d), 512)  # statistics on (up to) 2 x 512 training responses
        set_statistics(rm, train_d.chosen[:n] + train_d.rejected[:n], tok.pad_id,
                       cfg.train.eval_batch_size)
        rm.max_len = cfg.data.max_len
        save_reward_model(rm, tok, out / "model", {"trained_steps": total},
                          write=info.is_main)
        last = validate(rm, val_d, tok, cfg)
        summary.update(last_val_accuracy=last.get("val_accuracy"),
                       last_val_length_rule_accuracy=last.get("val_length_rule_accuracy"),
                       last_val_ece=last.get("val_ece"), last_val_loss=last.get("val_loss"),
                       score_mean=float(rm.mean), score_std=float(rm.std))
        if info.is_main:
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier(info)
    return summary


def cli(argv: list[str]) -> int:
    cfg = parse_cli(RewardTrainConfig, "rlhf train-reward", __doc__, argv)
    info = dist.init(cfg.runtime.device)
    summary = train(cfg)
    if info.is_main:
        print(json.dumps(summary))
    dist.finish(info)
    return 0
