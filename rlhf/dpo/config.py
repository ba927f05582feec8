"""Typed configuration of `rlhf train-dpo` (`DPOTrainConfig`, which the loop nests as its `dpo`
section). Data and optimiser sections are the reward stage's own (same keys, same checks:
ties 'half' / 'drop', split by prompt, truncation rule); each field's docstring is its
documentation (`--help` lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require
from rlhf.lm.config import LoraConfig
from rlhf.lm.memory import MemoryConfig
from rlhf.preferences.config import PairDataConfig, PairOptimConfig


@dataclass
class DPOModelConfig(MemoryConfig):
    init: str = "../shared/models/stories260K"
    """The policy to fine-tune (llama2.c or HF-style folder)."""
    reference: str = ""
    """The reference policy pi_ref of the log-ratios ('' = init). Its log-probs of every pair
    are computed once and cached in the run folder."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (rank 0 = off; rlhf.lm.lora): the base frozen,
    the reference (reference '') the base with adapters off (its log-probs cached once);
    saved as a peft adapter folder (adapter/) beside the merged model."""


@dataclass
class DPOLossConfig:
    kind: Literal["dpo", "ipo"] = "dpo"
    """'dpo': -log sigmoid(beta (h_c - h_r)) (Rafailov et al. 2023, eq. 7); 'ipo': the squared
    loss (h_c - h_r - 1/(2 beta))^2 (Azar et al. 2023, eq. 17). rlhf/preferences/losses.py."""
    beta: float = 0.1
    """beta: the implicit reward is beta * log(pi / pi_ref); larger = stay closer to pi_ref
    (IPO's tau)."""
    label_smoothing: float = 0.0
    """Conservative DPO: the share of labels assumed flipped (target 1 -> 1 - eps); 0 = off."""
    margin: bool = False
    """Subtract Llama 2's margin for the rater's stated strength (implicit-reward units)."""

    def check(self) -> None:
        require(self.beta > 0, "beta", "must be > 0")
        require(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")


@dataclass
class DPOTrainConfig:
    """`rlhf train-dpo`: fine-tune a policy directly on pairwise comparisons."""

    out_dir: str = "runs/dpo"
    """Run folder: config.yaml, metrics.jsonl, reference_logprobs.safetensors (the cached
    reference pass), state/ (resumable), policy/ (the trained policy, with dpo.json),
    summary.json, dpo.png."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """Show a tqdm progress bar (only when attached to a terminal)."""
    data: PairDataConfig = field(default_factory=PairDataConfig)
    """Which comparisons, ties, split by prompt and truncation (the reward stage's keys)."""
    model: DPOModelConfig = field(default_factory=DPOModelConfig)
    """The policy and its reference."""
    loss: DPOLossConfig = field(default_factory=DPOLossConfig)
    """DPO or IPO, beta, label smoothing, margins."""
    train: PairOptimConfig = field(default_factory=lambda: PairOptimConfig(lr=5e-4))
    """Optimiser, schedule, batches, evaluation and checkpoint cadence (the reward stage's
    keys; lr defaults to 5e-4 here)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device, precision, ddp/fsdp."""
