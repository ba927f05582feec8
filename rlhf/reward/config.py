"""Typed configuration of the reward stage: `rlhf train-reward` (`RewardTrainConfig`, which
the loop nests as its `reward` section) and `rlhf eval-reward` (`EvalRewardConfig`). Each
field's docstring is its documentation (`--help` lists them); `check()` rejects impossible
values by key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require


@dataclass
class RewardDataConfig:
    paths: list[str] = field(default_factory=lambda: [
        "../shared/data/preferences/hh-rlhf-harmless-base-test.jsonl.gz"])
    """Comparison stores and/or preference files (any format `feedback.formats.read_any` reads)."""
    ties: Literal["half", "drop", "model"] = "half"
    """Tie / both bad: 'half' trains them as 1/2 targets (Christiano et al. 2017), 'drop'
    leaves them out, 'model' fits Davidson's (1970) tie model with a learned tie parameter
    (rlhf/reward/losses.py `davidson_loss`)."""
    cant_tell: Literal["drop", "tie"] = "drop"
    """"Can't tell" answers: 'drop' leaves them out (Christiano et al. 2017 drop comparisons
    the rater cannot judge); 'tie' treats them as ties (then `ties` decides)."""
    val_fraction: float = 0.1
    """Share of prompts (groups) held out for validation; 0 = no validation."""
    max_len: int = 256
    """Token limit per side, BOS and EOS included. Longer sides keep their last tokens."""
    max_pairs: int = 0
    """Use only the first N pairs (0 = all); for quick runs."""
    select_fraction: float = 0.0
    """For choosing settings without looking at the held-out prompts: > 0 leaves the
    `val_fraction` prompts out altogether and validates on this share of the *training*
    prompts instead (split again with seed + 1); the model then trains on the rest. 0 = off."""

    def check(self) -> None:
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        require(0 <= self.select_fraction < 1, "select_fraction", "must be in [0, 1)")
        require(self.max_len >= 3, "max_len", "must be >= 3 (BOS, a token, EOS)")
        require(self.max_pairs >= 0, "max_pairs", "must be >= 0")


@dataclass
class RewardModelConfig:
    init: str = "../shared/models/stories260K"
    """Where to start: a previous reward model folder (continued), or else a backbone folder
    (a policy: llama2.c or HF Llama; or an encoder: BERT / RoBERTa / DeBERTa-v2/v3). The loop
    sets this (the previous round's reward model, or the policy)."""
    backbone: str = ""
    """When set, the backbone a *fresh* reward model starts from (e.g. an encoder folder such
    as ../shared/models/all-MiniLM-L6-v2), whatever `init` names unless `init` is a previous
    reward model: so the loop can start round 1 from an encoder and continue from the
    previous round's model afterwards. A reward model here (e.g. a transformers
    *ForSequenceClassification folder, rlhf.reward.seqcls) is started from with its head
    copied into every member: the loop's way to start from an existing reward model."""
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    """Encoder backbones: how hidden states become one vector: 'mean' over real tokens (as
    sentence-transformers pools MiniLM), 'cls' (first token), 'pooler' (the folder's pooler
    on the first token, as BertForSequenceClassification). Causal backbones read the last
    token and ignore this."""
    train_backbone: bool = True
    """false: the backbone stays frozen and only the heads (and a tie parameter) learn: a
    linear probe on the pretrained features, for small data sets where fine-tuning overfits."""
    n_members: int = 4
    """Ensemble size: linear heads on the shared backbone (rlhf/reward/model.py says why)."""
    bootstrap: bool = True
    """Weight each member's loss by its own bootstrap resample counts of the training pairs."""

    def check(self) -> None:
        require(self.n_members >= 1, "n_members", "must be >= 1")


@dataclass
class RewardLossConfig:
    margin: bool = False
    """Subtract Llama 2's margin for the rater's stated strength (rlhf/reward/losses.py)."""
    centring: float = 0.0
    """Weight of the reward-centring penalty (r_chosen + r_rejected)^2; 0 = off."""

    tie_lr: float = 0.1
    """data.ties=model: peak learning rate of Davidson's tie parameter log(nu) (a scalar
    that a backbone's rate, e.g. 5e-5, would barely move), on the same warmup + cosine
    schedule as `train.lr`."""

    def check(self) -> None:
        require(self.centring >= 0, "centring", "must be >= 0")
        require(self.tie_lr > 0, "tie_lr", "must be > 0")


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
    """AdamW weight decay, on matrices only (rlhf.optim's rule)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas (PyTorch's defaults)."""
    warmup_steps: int = 10
    """Linear warmup steps, then cosine decay to min_lr_ratio * lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of lr."""
    epochs: float = 1.0
    """Passes over the training pairs (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimiser steps (0 = from epochs)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = off; rlhf.optim)."""
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
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        require(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                "must be two numbers in [0, 1)")


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


@dataclass
class EvalRewardConfig:
    """`rlhf eval-reward`: evaluate a saved reward model on preference data."""

    model: str = "runs/reward/model"
    """Reward model folder (written by `rlhf train-reward`)."""
    data: list[str] = field(default_factory=list)
    """Comparison stores or preference files (any format `rlhf.feedback.formats.read_any` reads)."""
    split: str = "all"
    """'all' pairs, or 'val' / 'train': the same split by prompt as `rlhf train-reward`
    with `val_fraction` and `runtime.seed`."""
    val_fraction: float = 0.1
    """Share of prompts held out (only used with split val/train)."""
    max_len: int = 0
    """Token limit per side (the truncation rule of rlhf.reward.model); 0 = the limit the
    model was trained with."""
    batch_size: int = 32
    """Sequences per forward pass."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.split in ("all", "val", "train"), "split", "must be all, val or train")
        require(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        require(self.max_len == 0 or self.max_len >= 3, "max_len", "must be 0 or >= 3")
