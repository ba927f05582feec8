"""A compact Llama-style causal language model in plain PyTorch, and the pieces the other
families (`rlhf.lm.gpt2`, `rlhf.lm.gpt_neox`) share with it.

RMSNorm, rotary position embeddings over interleaved pairs (llama2.c / Meta layout),
grouped-query attention through `scaled_dot_product_attention`, a SwiGLU feed-forward,
tied or untied output layer, and a preallocated KV cache for generation. The Llama-like
variants are options of this one model (`ModelArgs`): attention and MLP biases (Llama,
Qwen2), per-head q/k RMSNorm (Qwen3), an explicit head_dim, a sliding attention window
(Mistral), partial rotary and the `llama3` / `linear` rotary frequency scalings.

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
from torch.utils.checkpoint import checkpoint

from rlhf.lm.linear import Linear, linear


@dataclass
class ModelArgs:
    dim: int = 64
    """Width of the residual stream."""
    hidden_dim: int = 172
    """Width of the feed-forward."""
    n_layers: int = 5
    """Transformer blocks."""
    n_heads: int = 8
    """Query heads."""
    n_kv_heads: int = 4
    """Key/value heads (grouped-query attention when < n_heads)."""
    vocab_size: int = 512
    """Tokens in the vocabulary."""
    max_seq_len: int = 512
    """Longest sequence (prompt + response) the model accepts."""
    norm_eps: float = 1e-5
    """RMSNorm / LayerNorm epsilon."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    tie_embeddings: bool = True
    """Output layer shares the token embedding."""
    family: str = "llama"
    """Architecture: "llama" (this module), "gpt2" or "gpt_neox"."""
    hf_type: str = "llama"
    """Hugging Face `model_type` written on save: llama, mistral, qwen2, qwen3, gpt2, gpt_neox."""
    head_dim: int = 0
    """Width of one attention head (0: dim // n_heads)."""
    rotary_dim: int = 0
    """Leading dims of each head that are rotated (0: all; GPT-2 has no rotary)."""
    rope_scaling: tuple = ()
    """Rotary frequency scaling: () none, ("linear", factor) or
    ("llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)."""
    qkv_bias: bool = False
    """Biases on the q, k, v projections."""
    o_bias: bool = False
    """Bias on the attention output projection."""
    mlp_bias: bool = False
    """Biases on the feed-forward projections."""
    qk_norm: bool = False
    """Per-head RMSNorm of q and k before the rotation (Qwen3)."""
    sliding_window: int = 0
    """Each query sees only the last `sliding_window` keys, itself included (0: all; Mistral)."""
    parallel_residual: bool = True
    """GPT-NeoX: x + attn(ln1 x) + mlp(ln2 x) (else sequential)."""
    act: str = "silu"
    """Feed-forward activation: silu (SwiGLU), gelu (erf), gelu_new (tanh approximation)."""

    def __post_init__(self):
        self.head_dim = self.head_dim or (self.dim // self.n_heads if self.n_heads else 0)
        self.rotary_dim = self.rotary_dim or self.head_dim

    def num_params(self) -> int:
        """Parameter count, from the shapes alone (checked against the weight files before
        anything is allocated)."""
        D, H, Hkv, d, f = self.head_dim, self.n_heads, self.n_kv_heads, self.dim, self.hidden_dim
        layer_norm = self.family != "llama"
        qkv = (H + 2 * Hkv) * D
        per_layer = qkv * d + H * D * d + (qkv if self.qkv_bias else 0) + (d if self.o_bias else 0)
        per_layer += 2 * D if self.qk_norm else 0
        n_mats = 3 if self.family == "llama" else 2
        per_layer += n_mats * d * f + ((n_mats - 1) * f + d if self.mlp_bias else 0)
        per_layer += (4 if layer_norm else 2) * d
        out = 0 if self.tie_embeddings else self.vocab_size * d
        pos = self.max_seq_len * d if self.family == "gpt2" else 0
        final = 2 * d if layer_norm else d
        return self.vocab_size * d + pos + self.n_layers * per_layer + final + out


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


def rope_frequencies(args: ModelArgs) -> torch.Tensor:
    """Inverse frequencies theta^(-2j/R) of the R rotated dims (Su et al. 2021, eq. 15), with
    the configured scaling: "linear" divides them by the factor (Chen et al. 2023, position
    interpolation); "llama3" divides the low ones by the factor and blends the middle band
    (Meta's Llama 3.1 reference `apply_scaling`, as transformers' `_compute_llama3_parameters`)."""
    R = args.rotary_dim
    inv = 1.0 / args.rope_theta ** (torch.arange(0, R, 2, dtype=torch.int64).float() / R)
    kind = args.rope_scaling[0] if args.rope_scaling else "default"
    if kind == "linear":
        inv = inv / args.rope_scaling[1]
    elif kind == "llama3":
        factor, low, high, old_len = args.rope_scaling[1:]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv = torch.where(medium, blended, scaled)
    return inv


def rope_tables(args: ModelArgs, max_len: int) -> torch.Tensor:
    """Rotations e^(i * pos * freq_j) as complex64 (max_len, rotary_dim/2)
    (Su et al. 2021, eq. 34; the complex form of Llama's reference code)."""
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), rope_frequencies(args))
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (2i, 2i+1) of x (B, T, H, D) by complex rot (B, T, R/2); the
    dims from R on (partial rotary) pass through unchanged."""
    R = 2 * rot.shape[-1]
    if R < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :R], rot), x[..., R:]], -1)
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
        self.max_len = max_len


class Attention(nn.Module):
    """Grouped-query attention. q, k and v come from one fused projection `wqkv`
    (rows: n_heads q heads, then n_kv_heads k heads, then n_kv_heads v heads); optional
    biases and per-head q/k RMSNorm (Qwen3: normalised before the rotation)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wqkv = Linear(args.dim, (args.n_heads + 2 * args.n_kv_heads) * self.head_dim,
                           bias=args.qkv_bias)
        self.wo = Linear(args.n_heads * self.head_dim, args.dim, bias=args.o_bias)
        if args.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, args.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, args.norm_eps)
        self.qk_norm = args.qk_norm

    def forward(self, x, rot, attn_mask, cache: KVCache | None, layer: int):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        qkv = self.wqkv(x).view(B, T, H + 2 * Hkv, D)
        qk = qkv[:, :, :H + Hkv]
        if self.qk_norm:
            qk = torch.cat([self.q_norm(qk[:, :, :H]), self.k_norm(qk[:, :, H:])], 2)
        if rot is not None:
            qk = apply_rope(qk, rot)  # q and k heads rotated in one call
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
        self.w13 = Linear(args.dim, 2 * args.hidden_dim, bias=args.mlp_bias)
        self.w2 = Linear(args.hidden_dim, args.dim, bias=args.mlp_bias)

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
    """Llama-style decoder. `hidden()` gives final-norm states, `forward()` gives logits.
    Other families subclass it, replacing `make_block`, `make_norm` and `embed`."""

    rotary = True  # GPT-2 (learned positions) sets False
    checkpointing = False  # recompute each block in the backward pass (rlhf.lm.memory)

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(self.make_block(args) for _ in range(args.n_layers))
        self.norm = self.make_norm(args)
        self.output = Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        n = min(args.max_seq_len, 4096) if self.rotary else 0  # grown on demand
        self.register_buffer("rope", rope_tables(args, n), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def make_block(args: ModelArgs) -> nn.Module:
        return Block(args)

    @staticmethod
    def make_norm(args: ModelArgs) -> nn.Module:
        return RMSNorm(args.dim, args.norm_eps)

    def embed(self, tokens, positions):
        return self.tok_embeddings(tokens)

    def new_cache(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(self.args, batch, max_len, device, dtype)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _rotations(self, positions, n_needed: int):
        """Complex rotations (B, T, R/2) for `positions`; the table grows to `n_needed` rows."""
        if not self.rotary:
            return None
        if n_needed > self.rope.shape[0]:
            n = min(self.args.max_seq_len, max(n_needed, 2 * self.rope.shape[0]))
            self.rope = rope_tables(self.args, n).to(self.rope.device)
        return self.rope[positions]

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
        if cache is None:
            n_needed = int(positions.max()) + 1
            if n_needed > self.args.max_seq_len:
                raise ValueError(f"sequence position {n_needed - 1} exceeds max_seq_len "
                                 f"{self.args.max_seq_len}")
        else:  # the cache was checked against max_seq_len when it was made
            n_needed = cache.max_len if cache.length == 0 else 0
        rot = self._rotations(positions, n_needed)  # (B, T, R/2) complex
        if attn_mask is None:
            attn_mask = self._attention_mask(mask, cache, key_mask, T)
        elif 0 < self.args.sliding_window < T:  # an explicit layout: the window by positions
            near = positions[:, :, None] - positions[:, None, :] < self.args.sliding_window
            attn_mask = attn_mask & near.unsqueeze(1)  # (B, 1, T, T)
        x = self.embed(tokens, positions)
        ckpt = self.checkpointing and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            x = (checkpoint(layer, x, rot, attn_mask, cache, i, use_reentrant=False) if ckpt
                 else layer(x, rot, attn_mask, cache, i))
        if cache is not None:
            cache.length += T
        return self.norm(x)

    def _attention_mask(self, mask, cache, key_mask, T):
        """Boolean (B, 1, T, S) mask: causal, within the sliding window, padded keys hidden,
        each query sees itself. Returns "causal" or "none" where SDPA's own fast paths give
        the same result, and for one decoding step the additive bias of `decode_attention`
        (None: nothing hidden)."""
        device = self.tok_embeddings.weight.device
        start = cache.length if cache is not None else 0
        S = start + T
        W = self.args.sliding_window
        windowed = 0 < W < S
        keys = key_mask if key_mask is not None else mask
        if keys is None and start == 0 and not windowed:
            return "causal"
        if T == 1 and not windowed and (keys is None or bool(keys[:, :S].all())):
            return None if cache is not None else "none"
        q_idx = torch.arange(start, S, device=device).unsqueeze(1)
        k_idx = torch.arange(S, device=device).unsqueeze(0)
        allowed = k_idx <= q_idx  # (T, S)
        if windowed:
            allowed = allowed & (k_idx > q_idx - W)  # as transformers' sliding_window_overlay
        if keys is not None:
            allowed = allowed.unsqueeze(0) & keys.bool()[:, None, :S]  # (B, T, S)
            allowed = allowed | (k_idx == q_idx).unsqueeze(0)  # padded queries: avoid NaN rows
        if T == 1 and cache is not None:  # decode_attention's additive (B*Hkv, 1, S) bias
            allowed = allowed.expand(len(keys) if keys is not None else cache.k.shape[1], 1, S)
            bias = torch.zeros(allowed.shape, device=device,
                               dtype=self.tok_embeddings.weight.dtype)
            bias.masked_fill_(~allowed, float("-inf"))
            return bias.repeat_interleave(self.args.n_kv_heads, dim=0)
        return allowed if keys is None else allowed.unsqueeze(1)

    def forward(self, tokens, mask=None, positions=None, cache=None, key_mask=None,
                last_only: bool = False, attn_mask=None, start: int = 0):
        """Logits (B, T, V); (B, 1, V) for the last position only; (B, T - start, V) for
        positions start.. only (the output layer runs only where it is needed)."""
        h = self.hidden(tokens, mask, positions, cache, key_mask, attn_mask)
        if last_only:
            h = h[:, -1:]
        elif start:
            h = h[:, start:]
        return linear(h, self.output.weight)  # = self.output(h), oneDNN on CPU (rlhf.lm.linear)


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Forward FLOPs per token (Kaplan et al. 2020, table 1): 2 per weight of every matmul
    (the output layer included, the embedding lookups not) plus 2 * n_layers * seq_len * width
    for attention scores and values. Training costs about 3x this (forward + backward)."""
    lookups = args.vocab_size * args.dim + (args.max_seq_len * args.dim
                                            if args.family == "gpt2" else 0)
    matmul_weights = args.num_params() - lookups
    matmul_weights += args.vocab_size * args.dim if args.tie_embeddings else 0  # output layer
    return 2.0 * matmul_weights + 2.0 * args.n_layers * seq_len * args.n_heads * args.head_dim
