"""Typed configuration of `rlhf train-sft` (`SFTConfig`); each field's docstring is its
documentation (`--help` lists them); `check()` rejects impossible values by key."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import RuntimeConfig, require
from rlhf.feedback.datafiles import column_errors
from rlhf.lm.config import LoraConfig
from rlhf.lm.memory import MemoryConfig
from rlhf.preferences.config import PairOptimConfig


@dataclass
class SFTDataConfig:
    paths: list[str] = field(default_factory=lambda: [
        "../shared/data/text/tinystories-sample.txt"])
    """Where the rows come from, any mix of: TRL prompt-completion files ({"prompt",
    "completion"}, text or chat messages) and language-modelling files ({"text"} or
    {"messages"}) as JSONL / JSON / parquet / a `datasets` folder; comparison stores (their
    corrections: prompt -> corrected text); plain text files (*.txt: one row per paragraph,
    paragraphs separated by blank lines). Other kinds of answer in a store are left out."""
    completion_only: bool = True
    """Train on the completion tokens only (the prompt is context, not a target), as TRL's
    SFTTrainer does for prompt-completion rows. Rows without a prompt (plain text,
    language-modelling rows) always train on all their tokens. false = every token."""
    max_len: int = 256
    """Token limit per row (BOS and EOS included); longer rows keep their first max_len
    tokens (TRL's default truncation) and are counted in the metrics as truncated."""
    val_fraction: float = 0.1
    """Share of groups (prompts; for plain text, texts) held out for validation; 0 = none."""
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
        require(len(self.paths) > 0, "paths", "must name at least one file or store")
        require(self.max_len >= 3, "max_len", "must be >= 3 (BOS, a token, EOS)")
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        require(self.max_rows >= 0, "max_rows", "must be >= 0")
        for key, why in column_errors(self.columns):
            require(False, f"columns.{key}", why)


@dataclass
class SFTModelConfig(MemoryConfig):
    init: str = "../shared/models/stories260K"
    """The model to fine-tune (llama2.c or HF-style folder of a native family)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (rank 0 = off; rlhf.lm.lora): the base frozen,
    saved as a peft adapter folder (adapter/) beside the merged model."""


@dataclass
class SFTOptimConfig(PairOptimConfig):
    """The pair-trained stages' keys and checks (`PairOptimConfig`), with SFT's defaults and
    `packing`."""

    batch_size: int = 16
    """Rows per optimiser step, over all processes (the global batch). The loss is the mean
    over the batch's trained tokens (every token counts the same, as TRL's SFTTrainer with
    gradient accumulation)."""
    lr: float = 5e-4
    """Peak learning rate (AdamW)."""
    eval_batch_size: int = 32
    """Rows per forward pass in validation (held-out loss and token accuracy)."""
    packing: bool = True
    """Pack each micro-batch's rows into as few sequences of at most max_len tokens as fit
    (first-fit decreasing), each row seeing only its own tokens (block-diagonal causal mask,
    positions restarting at 0): less padding, the same loss as unpacked rows. A micro-batch
    is packed only where that needs at most 3/4 of its right-padded positions (packed
    attention is slower per position: rlhf.sft.data.pack_width)."""


@dataclass
class SFTConfig:
    """`rlhf train-sft`: supervised fine-tuning on demonstrations, corrections or text."""

    out_dir: str = "runs/sft"
    """Run folder: config.yaml, metrics.jsonl, state/ (resumable), policy/ (the trained
    model, with sft.json), summary.json."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """Show a tqdm progress bar (only when attached to a terminal)."""
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    """Which rows, what is trained, truncation and the validation split."""
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    """The model to fine-tune."""
    train: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    """Optimiser, schedule, batches, packing, evaluation and checkpoint cadence."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device, precision, ddp/fsdp."""
