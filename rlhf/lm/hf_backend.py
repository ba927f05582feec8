"""`backend: transformers`: any Hugging Face `AutoModelForCausalLM` behind the project's model
interface, for families without a native implementation (slower; needs the optional extra
`pip install "rlhf[transformers]"`).

The interface is the native one (`rlhf.lm.model.Transformer`): `hidden(tokens, mask,
positions, cache, key_mask)`, `forward(..., last_only, start)`, `new_cache(...)`, `args`
(dim, n_layers, vocab_size, max_seq_len, tie_embeddings), `tok_embeddings` and `output`.
Positions are counted over real tokens (as `generate` counts them under left padding), the
attention mask is the (B, S) key mask, and the cache is transformers' own `DynamicCache`.
An explicit attention layout (`attn_mask`, shared-prompt pairs) is not supported here.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn as nn

from rlhf.lm.hf_config import ModelConfigError
from rlhf.lm.model import ModelArgs

EXTRA = 'the transformers backend needs the optional extra: pip install "rlhf[transformers]"'


class HFCache:
    """transformers' DynamicCache, with the filled length the project's loop reads."""

    def __init__(self, max_len: int):
        from transformers import DynamicCache

        self.hf, self.length, self.max_len = DynamicCache(), 0, max_len


class HFBackend(nn.Module):
    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config.get_text_config()
        heads = c.num_attention_heads
        self.args = ModelArgs(
            dim=c.hidden_size, hidden_dim=getattr(c, "intermediate_size", 4 * c.hidden_size),
            n_layers=c.num_hidden_layers, n_heads=heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            vocab_size=c.vocab_size, max_seq_len=getattr(c, "max_position_embeddings", 2048),
            tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
            family="transformers", hf_type=c.model_type,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads)
        params = inspect.signature(hf_model.base_model.forward).parameters
        self.cache_key = "cache" if "cache" in params else "past_key_values"  # renamed in 5.x
        self.tok_embeddings = hf_model.get_input_embeddings()
        self.output = hf_model.get_output_embeddings()

    def new_cache(self, batch: int, max_len: int, device, dtype) -> HFCache:
        if max_len > self.args.max_seq_len:
            raise ValueError(f"KV cache of {max_len} positions exceeds max_seq_len "
                             f"{self.args.max_seq_len}")
        return HFCache(max_len)

    def hidden(self, tokens, mask=None, positions=None, cache: HFCache | None = None,
               key_mask=None, attn_mask=None):
        """Final-norm hidden states (B, T, dim) from the wrapped model's base model."""
        if attn_mask is not None:
            raise ModelConfigError("the transformers backend does not take an explicit "
                                   "attention layout (shared-prompt pairs); use a native model")
        keys = key_mask if key_mask is not None else mask
        if positions is None:
            positions = (torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
                         if mask is None else (mask.long().cumsum(-1) - 1).clamp(min=0))
        kw = {self.cache_key: cache.hf} if cache is not None else {}
        out = self.hf.base_model(input_ids=tokens, attention_mask=keys, position_ids=positions,
                                 use_cache=cache is not None, **kw)
        if cache is not None:
            cache.length += tokens.shape[1]
        return out.last_hidden_state

    def forward(self, tokens, mask=None, positions=None, cache=None, key_mask=None,
                last_only: bool = False, attn_mask=None, start: int = 0):
        h = self.hidden(tokens, mask, positions, cache, key_mask, attn_mask)
        if last_only:
            h = h[:, -1:]
        elif start:
            h = h[:, start:]
        return self.output(h)


def load_transformers(folder: Path) -> HFBackend:
    """An HF folder of any causal-LM family, through transformers (no remote code)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ModelConfigError(f"{folder}: {EXTRA}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                     trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise ModelConfigError(f"{folder}: transformers could not load it "
                               f"({str(e).splitlines()[0]})") from None
    return HFBackend(model).eval()
