"""The typed sections every pair-trained stage shares (`rlhf train-reward` and `rlhf train-dpo`
nest them as `data` and `train`): which comparisons and how they are split and truncated, and
the optimiser, schedule, batches and checkpoint cadence. Each field's docstring is its
documentation (`--help` lists them); `check()` rejects impossible values by key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import require
from rlhf.feedback.datafiles import column_errors


@dataclass
class PairDataConfig:
    paths: list[str] = field(default_factory=lambda: [
        "../shared/data/preferences/hh-rlhf-harmless-base-test.jsonl.gz"])
    """Comparison stores and/or data files (any format `feedback.formats.read_records` reads)."""
    kinds: list[Literal["comparison", "ranking", "correction", "rating"]] = field(
        default_factory=lambda: ["comparison", "ranking", "correction", "rating"])
    """Which kinds of answer train, as pairs (rules: rlhf/feedback/derive.py): comparisons;
    rankings (a K-ranking's K choose 2 pairs, each of weight 1 / (K choose 2), so a ranking
    counts as one judgement: Ouyang et al. 2022, sec. 3.5); corrections (the corrected text
    over the original); ratings (between responses to one prompt that one rater rated
    differently). Losses are weighted means, sum(w loss) / sum(w); comparisons weigh 1."""
    ties: Literal["half", "drop", "model"] = "half"
    """Tie / both bad: 'half' trains them as 1/2 targets (Christiano et al. 2017), 'drop'
    leaves them out, 'model' fits Davidson's (1970) tie model with a learned tie parameter
    (rlhf/preferences/losses.py `davidson_loss`)."""
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
    split: str = ""
    """Which split of a `datasets` folder saved as a DatasetDict, or of a Hub data set
    (`org/name` in paths), is read ('' = the only split, else 'train')."""
    columns: dict[str, str] = field(default_factory=dict)
    """Rename the data files' columns as they are read, {their name: the name read}, e.g.
    {question: prompt, good: chosen, bad: rejected}; names read: prompt, chosen, rejected,
    completion, label, text, messages (docs/data-formats.md). {} = as they are."""

    def check(self) -> None:
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        require(0 <= self.select_fraction < 1, "select_fraction", "must be in [0, 1)")
        require(self.max_len >= 3, "max_len", "must be >= 3 (BOS, a token, EOS)")
        require(self.max_pairs >= 0, "max_pairs", "must be >= 0")
        require(len(self.kinds) > 0, "kinds", "must name at least one kind of answer")
        for key, why in column_errors(self.columns):
            require(False, f"columns.{key}", why)


@dataclass
class PairOptimConfig:
    batch_size: int = 32
    """Training examples (pairs; rows for KTO and SFT) per optimiser step, over all processes
    (the global batch)."""
    micro_batch_size: int = 0
    """Examples per forward pass on each process; 0 = batch_size / processes (no accumulation).
    Must divide batch_size / processes."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay, on matrices only (rlhf.harness.optim's rule)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas (PyTorch's defaults)."""
    warmup_steps: int = 10
    """Linear warmup steps, then cosine decay to min_lr_ratio * lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of lr."""
    epochs: float = 1.0
    """Passes over the training examples (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimiser steps (0 = from epochs)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = off; rlhf.harness.optim)."""
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
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
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
