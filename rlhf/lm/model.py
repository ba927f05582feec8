"""A compact Llama-style causal language model in plain PyTorch.

RMSNorm, rotary position embeddings over interleaved pairs (llama2.c / Meta layout),
grouped-query attention through `scaled_dot_product_attention`, a SwiGLU feed-forward,
tied or untied output layer, and a preallocated KV cache for generation.

Padding: any mix of left and right padding is handled by passing `mask` (B, T), 1 for real
tokens. Positions are counted over real tokens only (cumsum of the mask), and padded keys are
never attended to, so a sequence's outputs do not depend on how it was padded or batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    dim: int = 64
    """Width of the residual stream."""
    hidden_dim: int = 172
    """Width of the SwiGLU feed-forward."""
    n_layers: int = 5
    """Transformer blocks."""
    n_heads: int = 8
    """Query heads."""
    n_kv_heads: int = 4
    """Key/value heads (grouped-query attention when < n_heads)."""
    vocab_size: int = 512
    """Tokens in the vocabulary."""
    max_seq_len: int = 512
    """Longest sequence (prompt + response) the rotary tables cover."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    tie_embeddings: bool = True
    """Output layer shares the token embedding."""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def num_params(self) -> int:
        kv = self.n_kv_heads * self.head_dim
        per_layer = 2 * self.dim + 2 * self.dim * self.dim + 2 * kv * self.dim
        per_layer += 3 * self.dim * self.hidden_dim
        out = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019, eq. 4), in float32."""
        if x.dtype == self.weight.dtype == torch.float32:  # no casts: they cost time per call
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_tables(head_dim: int, max_len: int, theta: float) -> torch.Tensor:
    """Rotations e^(i * pos * theta^(-2j/D)) as complex64 (max_len, head_dim/2)
    (Su et al. 2021, eq. 34; the complex form of Llama's reference code)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (2i, 2i+1) of x (B, T, H, D) by complex rot (B, T, D/2)."""
    f32 = x.dtype == torch.float32
    xc = torch.view_as_complex((x if f32 else x.float()).unflatten(-1, (-1, 2)))  # (B,T,H,D/2)
    y = torch.view_as_real(xc * rot.unsqueeze(2)).flatten(-2)
    return y if f32 else y.type_as(x)


class KVCache:
    """Preallocated keys and values for all layers. Keys are stored transposed,
    (n_layers, B, n_kv_heads, D, max_len), so a decoding step's q @ k^T reads them
    contiguously; values are (n_layers, B, n_kv_heads, max_len, D)."""

    def __init__(self, args: ModelArgs, batch: int, max_len: int, device, dtype):
        if max_len > args.max_seq_len:
            raise ValueError(f"KV cache of {max_len} positions exceeds max_seq_len "
                             f"{args.max_seq_len}")
        Hkv, D = args.n_kv_heads, args.head_dim
        self.k = torch.zeros((args.n_layers, batch, Hkv, D, max_len), device=device, dtype=dtype)
        self.v = torch.zeros((args.n_layers, batch, Hkv, max_len, D), device=device, dtype=dtype)
        self.length = 0  # columns filled so far (shared by all rows: prompts are left-padded)


class Attention(nn.Module):
    """Grouped-query attention. q, k and v come from one fused projection `wqkv`
    (rows: n_heads q heads, then n_kv_heads k heads, then n_kv_heads v heads)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wqkv = nn.Linear(args.dim, (args.n_heads + 2 * args.n_kv_heads) * self.head_dim,
                              bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, rot, attn_mask, cache: KVCache | None, layer: int):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        qkv = self.wqkv(x).view(B, T, H + 2 * Hkv, D)
        qk = apply_rope(qkv[:, :, :H + Hkv], rot)  # q and k heads rotated in one call
        if cache is not None and T == 1:  # decoding one token: see decode_attention
            S = cache.length + 1
            cache.k[layer, :, :, :, S - 1] = qk[:, 0, H:]  # (B, Hkv, D)
            cache.v[layer, :, :, S - 1] = qkv[:, 0, H + Hkv:]  # (B, Hkv, D)
            y = decode_attention(qk[:, 0, :H].reshape(B * Hkv, H // Hkv, D),
                                 cache.k[layer, ..., :S].reshape(B * Hkv, D, S),
                                 cache.v[layer, :, :, :S].reshape(B * Hkv, S, D), attn_mask)
            return self.wo(y.view(B, 1, H * D))
        q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, D)
        k = qk[:, :, H:].transpose(1, 2)  # (B, Hkv, T, D)
        v = qkv[:, :, H + Hkv:].transpose(1, 2)  # (B, Hkv, T, D)
        if cache is not None:
            start = cache.length
            cache.k[layer, ..., start:start + T] = k.transpose(-1, -2)
            cache.v[layer, :, :, start:start + T] = v
            k = cache.k[layer, ..., :start + T].transpose(-1, -2)
            v = cache.v[layer, :, :, :start + T]
        gqa = Hkv != H
        if isinstance(attn_mask, str):  # "causal" (no padding) or "none" (one query, all keys)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=attn_mask == "causal",
                                               enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


def decode_attention(q, kt, v, bias=None):
    """softmax(q k^T / sqrt(D) + bias) v (Vaswani et al. 2017, eq. 1) for one new token per
    row, with grouped-query heads (Ainslie et al. 2023) folded into the batch:
    q (B*Hkv, rep, D), the rep query heads that share a kv head; kt (B*Hkv, D, S) keys,
    transposed; v (B*Hkv, S, D); bias (B*Hkv, 1, S) additive mask (0 or -inf) or None.
    Returns (B*Hkv, rep, D). Three batched matmul-class calls: at decoding sizes on CPU the
    cost is per call, and this beats SDPA's masked path by about 2x."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    if bias is None:
        scores = torch.bmm(q, kt).mul_(scale)  # (B*Hkv, rep, S)
    else:
        scores = torch.baddbmm(bias, q, kt, alpha=scale)  # (B*Hkv, rep, S)
    return torch.bmm(scores.softmax(-1), v)


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x), with w1 and w3 fused into `w13`."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w13 = nn.Linear(args.dim, 2 * args.hidden_dim, bias=False)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x, rot, attn_mask, cache, layer):
        x = x + self.attention(self.attention_norm(x), rot, attn_mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Llama-style decoder. `hidden()` gives final-norm states, `forward()` gives logits."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        rot = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta)
        self.register_buffer("rope", rot, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def hidden(self, tokens, mask=None, positions=None, cache: KVCache | None = None,
               key_mask=None, attn_mask=None):
        """Final-norm hidden states (B, T, dim).

        tokens (B, T); mask (B, T) 1 for real tokens (None: no padding, causal only);
        positions (B, T) rotary positions (default: count of real tokens before each one);
        cache: a KVCache to read from and extend (generation); key_mask (B, S) validity of
        every key in the cache including the new ones (generation only); attn_mask: an
        explicit bool (B, 1, T, T) mask (True = may attend) used instead of the built one,
        for layouts other than causal-with-padding (shared-prompt pairs; no cache).
        """
        B, T = tokens.shape
        if positions is None:
            if mask is None:
                positions = torch.arange(T, device=tokens.device).expand(B, T)
            else:
                positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if cache is None and positions.max() >= self.args.max_seq_len:  # (a cache is checked)
            raise ValueError(f"sequence position {int(positions.max())} exceeds max_seq_len "
                             f"{self.args.max_seq_len}")
        rot = self.rope[positions]  # (B, T, D/2) complex
        if attn_mask is None:
            attn_mask = self._attention_mask(mask, cache, key_mask, T)
        x = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, rot, attn_mask, cache, i)
        if cache is not None:
            cache.length += T
        return self.norm(x)

    def _attention_mask(self, mask, cache, key_mask, T):
        """Boolean (B, 1, T, S) mask: causal, padded keys hidden, each query sees itself.
        Returns "causal" or "none" where SDPA's own fast paths give the same result, and
        for one decoding step the additive bias of `decode_attention` (None: no padding)."""
        device = self.rope.device
        start = cache.length if cache is not None else 0
        S = start + T
        keys = key_mask if key_mask is not None else mask
        if keys is None and start == 0:
            return "causal"
        if T == 1 and (keys is None or bool(keys[:, :S].all())):
            return None if cache is not None else "none"
        if T == 1 and cache is not None:  # decode_attention's additive (B*Hkv, 1, S) bias
            bias = torch.zeros(keys.shape[0], 1, S, device=device,
                               dtype=self.tok_embeddings.weight.dtype)
            bias.masked_fill_(~keys[:, None, :S].bool(), float("-inf"))
            return bias.repeat_interleave(self.args.n_kv_heads, dim=0)
        q_idx = torch.arange(start, S, device=device).unsqueeze(1)
        k_idx = torch.arange(S, device=device).unsqueeze(0)
        causal = k_idx <= q_idx  # (T, S)
        if keys is None:
            return causal
        allowed = causal.unsqueeze(0) & keys.bool()[:, None, :S]  # (B, T, S)
        allowed = allowed | (k_idx == q_idx).unsqueeze(0)  # padded queries: avoid NaN rows
        return allowed.unsqueeze(1)

    def forward(self, tokens, mask=None, positions=None, cache=None, key_mask=None,
                last_only: bool = False, attn_mask=None, start: int = 0):
        """Logits (B, T, V); (B, 1, V) for the last position only; (B, T - start, V) for
        positions start.. only (the output layer runs only where it is needed)."""
        h = self.hidden(tokens, mask, positions, cache, key_mask, attn_mask)
        if last_only:
            h = h[:, -1:]
        elif start:
            h = h[:, start:]
        return self.output(h)


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Forward FLOPs per token (Kaplan et al. 2020, table 1): 2 per weight of every matmul
    (the output layer included, the embedding lookup not) plus 2 * n_layers * seq_len * dim
    for attention scores and values. Training costs about 3x this (forward + backward)."""
    matmul_weights = args.num_params() - args.vocab_size * args.dim  # drop the lookup table
    matmul_weights += args.vocab_size * args.dim if args.tie_embeddings else 0  # output layer
    return 2.0 * matmul_weights + 2.0 * args.n_layers * seq_len * args.dim
