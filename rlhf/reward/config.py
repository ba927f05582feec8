"""Typed configuration of the reward stage: `rlhf train-reward` (`RewardTrainConfig`, which
the loop nests as its `reward` section) and `rlhf eval-reward` (`EvalRewardConfig`). Each
field's docstring is its documentation (`--help` lists them); `check()` rejects impossible
values by key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require
from rlhf.feedback.datafiles import column_errors
from rlhf.lm.config import LoraConfig
from rlhf.lm.memory import MemoryConfig
from rlhf.preferences.config import PairDataConfig, PairOptimConfig


@dataclass
class RewardModelConfig(MemoryConfig):
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
    length_head: bool = False
    """true: a second head per member takes up response length and the quality head is kept
    uncorrelated with it (ODIN, Chen et al. 2024; `loss.length_weight`,
    `loss.orthogonal_weight`); every score read from the model (the policy's reward, accuracy,
    export) is the quality head's alone, so a policy cannot gain reward by length. A model
    continued from one without the head gets a fresh one; false drops a loaded one."""
    length_term: bool = False
    """true: the preferences are fitted as the quality head's score plus a learned coefficient
    per member times the response's length (a product of experts whose length expert is
    linear: Shen et al. 2023; the length term of AlpacaEval's length-controlled GLM, Dubois
    et al. 2024); every score read from the model is the quality head's alone. Unlike
    `length_head` (ODIN) the quality head is not forced to be uncorrelated with length, so
    quality that comes with length stays in it; only the raters' taste for length itself
    goes to the term. The coefficient starts at the length-only logistic fit of the
    training pairs (`loss.length_lr`)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """A causal backbone: LoRA adapters instead of fine-tuning it whole (rank 0 = off;
    rlhf.lm.lora); the heads train in full. The reward model folder is written merged."""

    def check(self) -> None:
        require(self.n_members >= 1, "n_members", "must be >= 1")
        require(not (self.length_term and self.length_head), "length_term", "choose one: "
                "length_head (ODIN) or length_term")


@dataclass
class RewardLossConfig:
    margin: bool = False
    """Subtract Llama 2's margin for the rater's stated strength (rlhf/preferences/losses.py)."""
    centring: float = 0.0
    """Weight of the reward-centring penalty (r_chosen + r_rejected)^2; 0 = off."""

    tie_lr: float = 0.1
    """data.ties=model: peak learning rate of Davidson's tie parameter log(nu) (a scalar
    that a backbone's rate, e.g. 5e-5, would barely move), on the same warmup + cosine
    schedule as `train.lr`."""

    length_lr: float = 0.05
    """model.length_term: peak learning rate of the length coefficients (per 100 characters),
    on the same warmup + cosine schedule as `train.lr`."""
    length_weight: float = 1.0
    """model.length_head: weight of ODIN's length loss |rho(quality, length)| -
    rho(length head, length) (Pearson's rho over each micro-batch's responses: a micro-batch
    of a few pairs gives a noisy rho). 1.0 as in the paper."""
    orthogonal_weight: float = 1.0
    """model.length_head: weight of ODIN's orthogonality loss |cos(quality head, length
    head)|. 1.0 as in the paper."""

    def check(self) -> None:
        require(self.length_weight >= 0, "length_weight", "must be >= 0")
        require(self.orthogonal_weight >= 0, "orthogonal_weight", "must be >= 0")
        require(self.centring >= 0, "centring", "must be >= 0")
        require(self.tie_lr > 0, "tie_lr", "must be > 0")
        require(self.length_lr > 0, "length_lr", "must be > 0")


@dataclass
class RewardTrainConfig:
    """`rlhf train-reward`: train a reward model on pairwise comparisons."""

    out_dir: str = "runs/reward"
    """Run folder: config.yaml, metrics.jsonl, state/ (resumable), model/ (the reward model)."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """Show a tqdm progress bar."""
    data: PairDataConfig = field(default_factory=PairDataConfig)
    """Which comparisons, split and truncation."""
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Backbone and ensemble."""
    loss: RewardLossConfig = field(default_factory=RewardLossConfig)
    """Loss options."""
    train: PairOptimConfig = field(default_factory=PairOptimConfig)
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
    data_split: str = ""
    """Which split of a `datasets` folder saved as a DatasetDict, or of a Hub data set, is read
    ('' = the only split, else 'train'); train-reward's `data.split`."""
    columns: dict[str, str] = field(default_factory=dict)
    """Rename the data files' columns as they are read, {their name: the name read};
    train-reward's `data.columns`."""
    kinds: list[Literal["comparison", "ranking", "correction", "rating"]] = field(
        default_factory=lambda: ["comparison", "ranking", "correction", "rating"])
    """Which kinds of answer give the pairs evaluated (`rlhf train-reward`'s `data.kinds`;
    each pair counts once, a ranking's K choose 2 pairs as K choose 2)."""
    ties: Literal["half", "drop", "model"] = "half"
    """Ties and "both bad" as `data.ties` in training (here 'model' = 'half'): tied pairs are
    kept for the loss, left out of the accuracy."""
    cant_tell: Literal["drop", "tie"] = "drop"
    """"Can't tell" answers as `data.cant_tell` in training."""
    split: str = "all"
    """'all' pairs, or 'val' / 'train': the same split by prompt as `rlhf train-reward`
    with `val_fraction` and `runtime.seed` (and the same kinds, ties and cant_tell as its
    data section: the defaults are the same)."""
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
        for key, why in column_errors(self.columns):
            require(False, f"columns.{key}", why)
        require(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        require(self.max_len == 0 or self.max_len >= 3, "max_len", "must be 0 or >= 3")
