"""Typed configuration of the language-model stage: how tokens are sampled, and
`rlhf generate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    """Most tokens generated after the prompt."""
    temperature: float = 1.0
    """Softmax temperature; must be > 0 (use greedy for argmax decoding)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    greedy: bool = False
    """Argmax decoding (ignores temperature, top_k, top_p)."""
    stop_at_bos: bool = True
    """Also stop a sequence when it samples BOS (llama2.c models start a new story with BOS)."""
    min_new_tokens: int = 0
    """EOS (and BOS, when it stops) cannot be sampled before this many new tokens (0 = off)."""
    prompt_truncation: Literal["left", "drop", "error"] = "left"
    """A prompt longer than the context leaves room for (max_seq_len - max_new_tokens tokens):
    'left' keeps its last tokens (BOS stays first), 'drop' leaves it out of the prompt set,
    'error' stops with one line naming it; either way stderr counts them."""

    def check(self) -> None:
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
                "must be in [0, max_new_tokens]")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.top_k >= 0, "top_k", "must be >= 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")


@dataclass
class LoraConfig:
    """LoRA (Hu et al. 2021): each chosen linear layer W (out x in) trains a low-rank update
    B A (B: out x rank, zero at the start; A: rank x in) scaled by alpha / rank, the base
    weights frozen (`rlhf.lm.lora`). Saved as a peft adapter folder beside the merged model."""

    rank: int = 0
    """Rank r of the update (0 = off: full fine-tuning)."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / rank) B A (peft's lora_alpha)."""
    dropout: float = 0.0
    """Dropout on the input of the adapters while training (peft's lora_dropout)."""
    target_modules: list[str] = field(default_factory=list)
    """The layers that get adapters, by their Hugging Face names as peft users write them:
    Llama family q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; GPT-2 c_attn,
    c_proj, c_fc; GPT-NeoX query_key_value, dense, dense_h_to_4h, dense_4h_to_h; or
    "all-linear" (every one of them). Empty = peft's default for the family (q_proj and v_proj;
    GPT-2 c_attn; GPT-NeoX query_key_value)."""

    def check(self) -> None:
        require(self.rank >= 0, "rank", "must be >= 0 (0 = off)")
        require(self.alpha > 0, "alpha", "must be > 0")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass
class GenerateConfig:
    """`rlhf generate`: sample text from a model."""

    model: str = "../shared/models/stories260K"
    """Model folder: a llama2.c checkpoint (*.bin + tok*.bin) or an HF-style folder."""
    backend: str = "native"
    """How HF folders are run: "native" or "transformers" (any AutoModelForCausalLM)."""
    prompts: list[str] = field(default_factory=lambda: ["Once upon a time"])
    """Prompts to continue."""
    prompts_file: str = ""
    """Read the prompts from this file or dataset instead (`rlhf.prompts.load_prompts`: text,
    JSONL/JSON with prompt strings or chat messages, parquet, a datasets folder)."""
    prompt_column: str = ""
    """Key of the prompt in JSON/JSONL/parquet/dataset rows ('' = the first of prompt,
    messages, text)."""
    prompt_split: str = "train"
    """Split of a `datasets` folder saved as a DatasetDict, or of a Hub dataset."""
    n: int = 1
    """Samples per prompt."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How tokens are drawn."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.n >= 1, "n", "must be >= 1")
        require(self.backend in ("native", "transformers"), "backend",
                "must be native or transformers")
