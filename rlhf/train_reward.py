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

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from rlhf import distributed as dist
from rlhf.checkpoint import load_state, save_state
from rlhf.comparisons import PreferencePair, to_pairs
from rlhf.config import (
    ConfigError,
    RuntimeConfig,
    describe,
    load_config,
    require,
    save_config,
)
from rlhf.eval_reward import evaluate_encoded
from rlhf.losses import centring_penalty, margins_from_strengths, preference_loss
from rlhf.reward_model import (
    bootstrap_weights,
    encode_pair_side,
    init_reward_model,
    pack_pairs,
    packed_length,
    save_reward_model,
    set_statistics,
)
from rlhf.runtime import MetricsLog, autocast, setup


@dataclass
class RewardDataConfig:
    paths: list[str] = field(default_factory=lambda: [
        "../shared/data/preferences/hh-rlhf-harmless-base-test.jsonl.gz"])
    """Comparison stores and/or preference files (any format `rlhf.formats.read_any` reads)."""
    ties: Literal["half", "drop"] = "half"
    """Tie / both bad / can't tell: 'half' trains them as 1/2 targets, 'drop' leaves them out."""
    val_fraction: float = 0.1
    """Share of prompts (groups) held out for validation; 0 = no validation."""
    max_len: int = 256
    """Token limit per side, BOS and EOS included. Longer sides keep their last tokens."""
    max_pairs: int = 0
    """Use only the first N pairs (0 = all); for quick runs."""

    def check(self) -> None:
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        require(self.max_len >= 3, "max_len", "must be >= 3 (BOS, a token, EOS)")
        require(self.max_pairs >= 0, "max_pairs", "must be >= 0")


@dataclass
class RewardModelConfig:
    init: str = "../shared/models/stories260K"
    """Backbone: a policy folder (llama2.c or HF-style) or a previous reward model folder."""
    n_members: int = 4
    """Ensemble size: linear heads on the shared backbone (rlhf/reward_model.py says why)."""
    bootstrap: bool = True
    """Weight each member's loss by its own bootstrap resample counts of the training pairs."""

    def check(self) -> None:
        require(self.n_members >= 1, "n_members", "must be >= 1")


@dataclass
class RewardLossConfig:
    margin: bool = False
    """Subtract Llama 2's margin for the rater's stated strength (rlhf/losses.py)."""
    centring: float = 0.0
    """Weight of the reward-centring penalty (r_chosen + r_rejected)^2; 0 = off."""

    def check(self) -> None:
        require(self.centring >= 0, "centring", "must be >= 0")


@dataclass
class RewardOptimConfig:
    batch_size: int = 32
    """Pairs per optimiser step, over all processes (the global batch)."""
    micro_batch_size: int = 0
    """Pairs per forward pass on each process; 0 = batch_size / processes (no accumulation).
    Must divide batch_size / processes."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (not on norms and biases)."""
    warmup_steps: int = 10
    """Linear warmup steps, then cosine decay to min_lr_ratio * lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of lr."""
    epochs: float = 1.0
    """Passes over the training pairs (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimiser steps (0 = from epochs)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    group_by_length: bool = True
    """Form batches of similar length (less padding); order is still random."""
    eval_every: int = 50
    """Validation every N steps (0 = only at the end)."""
    save_every: int = 100
    """Training-state checkpoint every N steps (0 = only at the end)."""
    eval_batch_size: int = 64
    """Sequences per forward pass in evaluation."""
    stop_at: int = 0
    """Leave after this global step with a checkpoint, unfinished (the schedule still spans
    the whole run): for time-boxed jobs that resume later. 0 = run to the end."""

    def check(self) -> None:
        for key in ("batch_size",):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("micro_batch_size", "warmup_steps", "max_steps", "eval_every",
                    "save_every", "stop_at"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(self.lr > 0, "lr", "must be > 0")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")


@dataclass
class RewardTrainConfig:
    """`rlhf train-reward`: train a reward model on pairwise comparisons."""

    out_dir: str = "runs/reward"
    """Run folder: config.yaml, metrics.jsonl, state/ (resumable), model/ (the reward model)."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """Show a tqdm progress bar."""
    data: RewardDataConfig = field(default_factory=RewardDataConfig)
    """Which comparisons, split and truncation."""
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Backbone and ensemble."""
    loss: RewardLossConfig = field(default_factory=RewardLossConfig)
    """Loss options."""
    train: RewardOptimConfig = field(default_factory=RewardOptimConfig)
    """Optimiser, schedule, batches, evaluation and checkpoint cadence."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device, precision."""


# ----------------------------------------------------------------------------- data


def read_comparisons(paths: list[str]):
    """Comparisons from stores and imported files, in order (`rlhf.formats.read_any`)."""
    from rlhf.formats import read_any

    out = []
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"data.paths: {p} not found")
        out.extend(read_any(p))
    return out


def split_by_group(pairs: list[PreferencePair], val_fraction: float, seed: int
                   ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out round(val_fraction * groups) whole prompt groups (seeded shuffle of the sorted
    group ids): no prompt is in both splits."""
    groups = sorted({p.group for p in pairs})
    g = torch.Generator().manual_seed(seed)
    order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    n_val = round(val_fraction * len(groups)) if val_fraction > 0 else 0
    val_groups = set(order[:n_val])
    return ([p for p in pairs if p.group not in val_groups],
            [p for p in pairs if p.group in val_groups])


@dataclass
class EncodedPairs:
    chosen: list[list[int]]
    rejected: list[list[int]]
    target: torch.Tensor  # (N,)
    margin: torch.Tensor  # (N,)
    len_chosen: list[int]  # characters, for the length rule
    len_rejected: list[int]
    truncated: int  # pairs with at least one side truncated

    def __len__(self) -> int:
        return len(self.chosen)

    def lengths(self) -> list[int]:
        """Tokens of each pair's packed row (shared prompt once), what a batch computes."""
        return [packed_length(a, b) for a, b in zip(self.chosen, self.rejected)]


def encode_pairs(pairs: list[PreferencePair], tok, max_len: int, margin: bool) -> EncodedPairs:
    c = [encode_pair_side(tok, p.prompt, p.chosen, max_len) for p in pairs]
    r = [encode_pair_side(tok, p.prompt, p.rejected, max_len) for p in pairs]
    targets = [p.target for p in pairs]
    m = (margins_from_strengths([p.strength for p in pairs], targets) if margin
         else torch.zeros(len(pairs)))
    return EncodedPairs([x[0] for x in c], [x[0] for x in r],
                        torch.tensor(targets, dtype=torch.float32), m,
                        [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs],
                        sum(a[1] or b[1] for a, b in zip(c, r)))


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool, window: int = 64) -> list[list[int]]:
    """The global batches (pair indices) of one epoch, a pure function of its arguments.
    Shuffle; drop the last incomplete batch (other pairs are dropped next epoch); with
    group_by_length, sort each run of `window` batches by length before cutting, then
    shuffle the batch order (so long and short batches alternate at random)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(lengths) // batch_size * batch_size
    perm = torch.randperm(len(lengths), generator=g).tolist()[:n]
    if group_by_length:
        span = batch_size * window
        perm = [i for s in range(0, n, span)
                for i in sorted(perm[s:s + span], key=lambda j: (lengths[j], j))]
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def lr_at(step: int, total: int, warmup: int, lr: float, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to min_ratio * lr at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


# ----------------------------------------------------------------------------- one step


def micro_batch_loss(model, data: EncodedPairs, idx: list[int], weights: torch.Tensor,
                     cfg: RewardTrainConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean weighted loss of pairs `idx`, chosen and rejected in one forward with their
    shared prompt computed once (`pack_pairs`); also the per-pair ensemble-mean score
    difference (b,) for training accuracy."""
    b = len(idx)
    packed = pack_pairs([data.chosen[i] for i in idx], [data.rejected[i] for i in idx], 0,
                        device)  # rows (b, T)
    with autocast(cfg.runtime, device):
        r = model(packed.tokens, packed=packed)  # (2b, E): chosen rows, then rejected
    rc, rr = r[:b], r[b:]  # (b, E)
    loss = preference_loss(rc, rr, data.target[idx].to(device), data.margin[idx].to(device))
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
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                           cfg.train.grad_clip or float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": float(dist.all_reduce_mean(total_loss, info)),
            "accuracy": float(dist.all_reduce_mean(right, info)),
            "grad_norm": float(dist.full_tensor(gnorm))}


def make_optimizer(rm, cfg: RewardOptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (nanoGPT's rule)."""
    params = [p for p in rm.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


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


def prepare_data(cfg: RewardTrainConfig, tok) -> tuple[EncodedPairs, EncodedPairs]:
    """Read, convert, split by prompt and tokenise: (train, validation)."""
    pairs = to_pairs(read_comparisons(cfg.data.paths), ties=cfg.data.ties)
    if cfg.data.max_pairs:
        pairs = pairs[:cfg.data.max_pairs]
    train_p, val_p = split_by_group(pairs, cfg.data.val_fraction, cfg.runtime.seed)
    if len(train_p) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                          f"{len(train_p)} training pairs")
    enc = [encode_pairs(p, tok, cfg.data.max_len, cfg.loss.margin) for p in (train_p, val_p)]
    return enc[0], enc[1]


def validate(rm, val: EncodedPairs, tok, cfg) -> dict:
    if not len(val):
        return {}
    out = evaluate_encoded(rm, val.chosen, val.rejected, val.target, val.len_chosen,
                           val.len_rejected, tok.pad_id, cfg.train.eval_batch_size)
    return {f"val_{k}": v for k, v in out.items() if not isinstance(v, dict)}


def train(cfg: RewardTrainConfig) -> dict:
    """Train a reward model as `cfg` says; returns a summary (see the module docstring)."""
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
    rm, tok = init_reward_model(cfg.model.init, cfg.model.n_members, cfg.runtime.seed)
    train_d, val_d = prepare_data(cfg, tok)
    weights = (bootstrap_weights(len(train_d), cfg.model.n_members, cfg.runtime.seed)
               if cfg.model.bootstrap else torch.ones(len(train_d), cfg.model.n_members))
    lengths = train_d.lengths()
    per_epoch = len(train_d) // cfg.train.batch_size
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
    # 3. model (DDP replica or FSDP shards), optimiser, resume
    rm.to(device).train()
    model = dist.wrap(rm, info, cfg.runtime.parallel)  # FSDP shards `rm` in place
    opt = make_optimizer(rm, cfg.train)
    step, best = 0, {"val_accuracy": float("nan")}
    log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    if cfg.resume and (out / "state").is_dir():
        meta, _ = load_state(out / "state", {"rm": rm}, {"opt": opt})
        step, best = meta["step"], meta["best"]
        log.truncate_after(step)
    if info.is_main:
        log.write(event="data", step=step, train_pairs=len(train_d), val_pairs=len(val_d),
                  truncated_pairs=train_d.truncated + val_d.truncated, total_steps=total,
                  world_size=info.world_size, sharded=dist.is_sharded(rm))
    # 4. steps
    bar = tqdm(range(step, total), initial=step, total=total,
               disable=not (cfg.progress and info.is_main), desc="reward")
    order, order_epoch, t0, n0 = None, -1, time.time(), step
    for step in bar:
        epoch = step // per_epoch
        if epoch != order_epoch:
            order = epoch_batches(lengths, cfg.train.batch_size, cfg.runtime.seed, epoch,
                                  cfg.train.group_by_length)
            order_epoch = epoch
        lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        m = train_step(model, opt, train_d, order[step % per_epoch], weights, cfg, info,
                       accum, device)
        done = step + 1
        row = {"step": done, "lr": lr, **m,
               "pairs_per_s": (done - n0) * cfg.train.batch_size / (time.time() - t0)}
        if (cfg.train.eval_every and done % cfg.train.eval_every == 0) or done == total:
            best = _evaluate_and_log(rm, val_d, tok, cfg, info, row, best)
        log.write(**row)
        bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.2f}")
        stop = cfg.train.stop_at and done >= cfg.train.stop_at and done < total
        if (cfg.train.save_every and done % cfg.train.save_every == 0) or done == total or stop:
            _checkpoint(out, rm, opt, done, best, info)
        if stop:
            bar.close()
            return {"stopped_at": done, "steps": total, "state": str(out / "state")}
    # 5. statistics, saved model, summary
    return _finish(cfg, rm, tok, train_d, val_d, out, info, best, total)


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


def _checkpoint(out: Path, rm, opt, step: int, best: dict, info) -> None:
    if info.is_main or dist.is_sharded(rm):  # FSDP: every rank gathers, rank 0 writes
        save_state(out / "state", {"rm": rm}, {"opt": opt},
                   {"step": step, "best": best, "world_size": info.world_size},
                   write=info.is_main)
    dist.barrier(info)


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
    p = argparse.ArgumentParser(prog="rlhf train-reward", description=__doc__,
                                epilog="config keys:\n" + describe(RewardTrainConfig),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML file of RewardTrainConfig keys")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    a = p.parse_args(argv)
    cfg_path = a.config if a.config and "=" not in a.config else None
    over = ([a.config] if a.config and cfg_path is None else []) + list(a.overrides)
    cfg = load_config(RewardTrainConfig, cfg_path, over)
    info = dist.init(cfg.runtime.device)
    summary = train(cfg)
    if info.is_main:
        print(json.dumps(summary))
    dist.finish(info)
    return 0
