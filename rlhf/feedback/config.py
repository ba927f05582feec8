"""Typed configuration of the feedback stage: `rlhf sample-pairs` (`PairsConfig`). Each field's
docstring is its documentation; `check()` rejects impossible values by key."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import RuntimeConfig, require
from rlhf.lm.config import SamplingConfig


@dataclass
class PairsConfig:
    """`rlhf sample-pairs`: two responses per prompt into a queue to rate."""

    model: str = "../shared/models/stories260K"
    """Policy folder (llama2.c or HF-style) to sample from."""
    prompts: str = ""
    """Prompt file ('' = TinyStories story openings from ../shared; rlhf.prompts says how
    each kind of file is read)."""
    prompt_column: str = ""
    """Key of the prompt in JSON/JSONL/parquet/dataset rows ('' = the first of prompt,
    messages, text)."""
    prompt_split: str = "train"
    """Split of a `datasets` folder saved as a DatasetDict, or of a Hub dataset."""
    out: str = "queue.jsonl"
    """Queue file to write (JSON lines of items)."""
    n_prompts: int = 20
    """Use at most this many prompts (0 = all)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=96))
    """How both responses are drawn."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.n_prompts >= 0, "n_prompts", "must be >= 0")
        require(bool(self.out), "out", "must name a file")
