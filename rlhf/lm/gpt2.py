"""GPT-2 (Radford et al. 2019) in the project's model interface.

Differs from the Llama model (`rlhf.lm.model`) in: learned absolute position embeddings
(`pos_embeddings`, added to the token embeddings; positions count real tokens, as Hugging
Face `generate` counts them under left padding), LayerNorm with bias instead of RMSNorm,
biases on every projection, and a plain GELU feed-forward (tanh approximation, "gelu_new").
The attention (fused q/k/v, KV cache, padding and decoding paths) is the shared `Attention`,
without rotation. Hugging Face stores the projections as `Conv1D` (weights transposed);
`rlhf.lm.hf_weights` converts them.

Dropout is not applied (the project trains without dropout, as TRL does).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from rlhf.lm.linear import Linear
from rlhf.lm.model import Attention, ModelArgs, Transformer


class MLP(nn.Module):
    """w2(gelu(w1 x)) with biases; `act` "gelu_new" (tanh approximation) or "gelu" (erf)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = Linear(args.dim, args.hidden_dim, bias=args.mlp_bias)
        self.w2 = Linear(args.hidden_dim, args.dim, bias=args.mlp_bias)
        self.approximate = "tanh" if args.act == "gelu_new" else "none"

    def forward(self, x):
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate))


class GPT2Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1 x), then + mlp(ln_2 x)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = nn.LayerNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.LayerNorm(args.dim, eps=args.norm_eps)
        self.feed_forward = MLP(args)

    def forward(self, x, rot, attn_mask, cache, layer):
        x = x + self.attention(self.attention_norm(x), rot, attn_mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class GPT2(Transformer):
    """GPT-2: token + learned position embeddings, LayerNorm blocks, final LayerNorm."""

    rotary = False

    def __init__(self, args: ModelArgs):
        super().__init__(args)
        self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim)
        nn.init.normal_(self.pos_embeddings.weight, std=0.01)

    @staticmethod
    def make_block(args: ModelArgs) -> nn.Module:
        return GPT2Block(args)

    @staticmethod
    def make_norm(args: ModelArgs) -> nn.Module:
        return nn.LayerNorm(args.dim, eps=args.norm_eps)

    def embed(self, tokens, positions):
        return self.tok_embeddings(tokens) + self.pos_embeddings(positions)
