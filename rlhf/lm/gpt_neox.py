"""GPT-NeoX / Pythia (Black et al. 2022; Biderman et al. 2023) in the project's model interface.

Differs from the Llama model (`rlhf.lm.model`) in: LayerNorm with bias, a plain GELU
feed-forward with biases, the parallel residual x + attn(ln_1 x) + mlp(ln_2 x)
(`use_parallel_residual`; sequential otherwise), and partial rotary: only the first
`rotary_dim` dims of each head are rotated. The attention is the shared `Attention`;
Hugging Face's fused `query_key_value` (rows per head: q, k, v) is reordered on load by
`rlhf.lm.hf_weights` to the shared layout (all q heads, then k, then v), and its
rotate-half rows to interleaved pairs.

Dropout is not applied (the project trains without dropout, as TRL does).
"""

from __future__ import annotations

import torch.nn as nn

from rlhf.lm.gpt2 import MLP
from rlhf.lm.model import Attention, ModelArgs, Transformer


class NeoXBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = nn.LayerNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.LayerNorm(args.dim, eps=args.norm_eps)
        self.feed_forward = MLP(args)
        self.parallel = args.parallel_residual

    def forward(self, x, rot, attn_mask, cache, layer):
        a = self.attention(self.attention_norm(x), rot, attn_mask, cache, layer)
        if self.parallel:
            return x + a + self.feed_forward(self.ffn_norm(x))
        x = x + a
        return x + self.feed_forward(self.ffn_norm(x))


class GPTNeoX(Transformer):
    """GPT-NeoX: token embeddings, parallel-residual LayerNorm blocks, final LayerNorm,
    untied output layer (`embed_out`) unless the config ties it."""

    @staticmethod
    def make_block(args: ModelArgs) -> nn.Module:
        return NeoXBlock(args)

    @staticmethod
    def make_norm(args: ModelArgs) -> nn.Module:
        return nn.LayerNorm(args.dim, eps=args.norm_eps)
