"""Typed configuration of `rlhf train-kto` (`KTOTrainConfig`). The optimiser section is the
pair-trained stages' own (`PairOptimConfig`: same keys, same checks); each field's docstring
is its documentation (`--help` lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require
from rlhf.feedback.datafiles import column_errors
from rlhf.lm.config import LoraConfig
from rlhf.lm.memory import MemoryConfig
from rlhf.preferences.config import PairOptimConfig


@dataclass
class KTODataConfig:
    paths: list[str] = field(default_factory=list)
    """Feedback stores and/or data files (any format `feedback.formats.read_records` reads;
    a TRL unpaired-preference file, {prompt, completion, label}, reads as thumbs ratings)."""
    origins: list[Literal["rating", "both_bad", "comparison"]] = field(
        default_factory=lambda: ["rating", "both_bad"])
    """Which answers give rows (rules: rlhf/feedback/derive.py): 'rating' (thumbs up =
    desirable, down = undesirable; on a longer scale above / below the middle, the middle
    gives nothing); 'both_bad' (both responses of a "both bad" comparison undesirable);
    'comparison' (a clear comparison unpaired: the preferred response desirable, the other
    undesirable, as TRL's `unpair_preference_dataset`; ties and "can't tell" give nothing)."""
    val_fraction: float = 0.1
    """Share of prompts (groups) held out for validation; 0 = no validation."""
    max_len: int = 256
    """Token limit per row (BOS, prompt, completion, EOS). Longer rows lose the prompt's start
    first, then the completion's start (its end, EOS included, is kept)."""
    max_rows: int = 0
    """Use only the first N rows (0 = all); for quick runs."""
    split: str = ""
    """Which split of a `datasets` folder saved as a DatasetDict, or of a Hub data set
    (`org/name` in paths), is read ('' = the only split, else 'train')."""
    columns: dict[str, str] = field(default_factory=dict)
    """Rename the data files' columns as they are read, {their name: the name read}, e.g.
    {question: prompt, good: chosen, bad: rejected}; names read: prompt, chosen, rejected,
    completion, label, text, messages (docs/data-formats.md). {} = as they are."""

    def check(self) -> None:
        require(len(self.paths) > 0, "paths", "must name at least one store or data file")
        require(len(self.origins) > 0, "origins", "must name at least one kind of answer")
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        require(self.max_len >= 3, "max_len", "must be >= 3 (BOS, a token, EOS)")
        require(self.max_rows >= 0, "max_rows", "must be >= 0")
        for key, why in column_errors(self.columns):
            require(False, f"columns.{key}", why)


@dataclass
class KTOModelConfig(MemoryConfig):
    init: str = "../shared/models/stories260K"
    """The policy to fine-tune (llama2.c or HF-style folder)."""
    reference: str = ""
    """The frozen reference policy pi_ref of the log-ratios ('' = init, the start model). It
    is held in memory beside the policy: the reference point needs its log-probs of each
    batch's mismatched pairs, which change with the batch."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (rank 0 = off; rlhf.lm.lora): the base frozen,
    the reference (reference '') the base with adapters off, one copy shared with the
    policy; saved as a peft adapter folder (adapter/) beside the merged model."""


@dataclass
class KTOLossConfig:
    beta: float = 0.1
    """beta: the implicit reward is beta * log(pi / pi_ref); larger = stay closer to pi_ref."""
    desirable_weight: float = 1.0
    """lambda_D, the weight of desirable rows' losses. The paper suggests
    lambda_D n_D / (lambda_U n_U) in [1, 4/3] (n: rows of each label); the `data` line of
    metrics.jsonl gives this ratio for the training rows."""
    undesirable_weight: float = 1.0
    """lambda_U, the weight of undesirable rows' losses."""

    def check(self) -> None:
        require(self.beta > 0, "beta", "must be > 0")
        require(self.desirable_weight > 0, "desirable_weight", "must be > 0")
        require(self.undesirable_weight > 0, "undesirable_weight", "must be > 0")


@dataclass
class KTOTrainConfig:
    """`rlhf train-kto`: fine-tune a policy on completions judged desirable or undesirable."""

    out_dir: str = "runs/kto"
    """Run folder: config.yaml, metrics.jsonl, state/ (resumable), policy/ (the trained
    policy, with kto.json), summary.json."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """Show a tqdm progress bar (only when attached to a terminal)."""
    data: KTODataConfig = field(default_factory=KTODataConfig)
    """Which answers, split by prompt, truncation."""
    model: KTOModelConfig = field(default_factory=KTOModelConfig)
    """The policy and its reference."""
    loss: KTOLossConfig = field(default_factory=KTOLossConfig)
    """beta and the desirable / undesirable weights."""
    train: PairOptimConfig = field(default_factory=lambda: PairOptimConfig(lr=5e-4))
    """Optimiser, schedule, batches (rows, not pairs, here; at least 2 per micro-batch: the
    reference point comes from mismatched pairs within it), evaluation and checkpoint
    cadence (the pair-trained stages' keys; lr defaults to 5e-4 here)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device, precision, ddp/fsdp."""
