"""Encoder modules: BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019) and DeBERTa-v2/v3
(He et al. 2021, "DeBERTa: decoding-enhanced BERT with disentangled attention"; v3: He et al.
2023) as one post-LayerNorm transformer encoder whose attention bias depends on the family.

BERT / RoBERTa: x = LN(word + position + segment); per layer: a = LN(x + Wo attn(x)),
x = LN(a + W2 act(W1 a)). RoBERTa numbers positions from pad_id + 1. DeBERTa: no absolute
position (v3) or an optional one, an optional embedding projection, the embeddings zeroed at
padding, and relative-position scores added to the attention logits (`deberta`).
Dropout follows the folder's config in training mode (as `transformers` does); none in eval.
Rows are right-padded (as every caller pads), so RoBERTa's positions pad_id + 1 + index equal
the ones transformers derives from the ids.
Parameter names map one to one onto the HF folder's tensors (`hf_names`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rlhf.lm.encoders.config import EncoderArgs
from rlhf.lm.encoders.deberta import relative_bias, relative_positions
from rlhf.lm.linear import Linear, linear


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """gelu = exact (erf) GELU; gelu_new / gelu_pytorch_tanh = the tanh approximation."""
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if name == "tanh":
        return torch.tanh(x)
    return F.relu(x)


class EncoderLayer(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        d, inner = a.dim, a.n_heads * a.head_dim
        self.wq, self.wk, self.wv = (Linear(d, inner) for _ in range(3))
        self.wo = Linear(inner, d)
        self.attn_norm = nn.LayerNorm(d, eps=a.eps)
        self.w_in, self.w_out = Linear(d, a.hidden_dim), Linear(a.hidden_dim, d)
        self.ffn_norm = nn.LayerNorm(d, eps=a.eps)
        if a.relative and not a.share_att_key:
            if "c2p" in a.pos_att_type:
                self.pos_k = Linear(d, inner)
            if "p2c" in a.pos_att_type:
                self.pos_q = Linear(d, inner)


class Encoder(nn.Module):
    """Token ids (B, T), padding mask (B, T), segment ids (B, T) -> hidden states (B, T, dim)."""

    checkpointing = False  # recompute each layer in the backward pass (rlhf.lm.memory)

    def __init__(self, args: EncoderArgs, pooler: bool = False):
        super().__init__()
        a = self.args = args
        e = a.embedding_size or a.dim
        self.tok_emb = nn.Embedding(a.vocab_size, e)
        self.pos_emb = nn.Embedding(a.max_positions, e) if a.absolute_positions else None
        self.type_emb = nn.Embedding(a.type_vocab_size, e) if a.type_vocab_size > 0 else None
        self.emb_proj = Linear(e, a.dim, bias=False) if e != a.dim else None
        self.emb_norm = nn.LayerNorm(a.dim, eps=a.eps)
        self.layers = nn.ModuleList(EncoderLayer(a) for _ in range(a.n_layers))
        self.rel_emb = nn.Embedding(2 * a.span, a.dim) if a.relative else None
        self.rel_norm = (nn.LayerNorm(a.dim, eps=a.eps) if a.relative and a.norm_rel_ebd
                         else None)
        self.pooler = Linear(a.dim, a.dim) if pooler else None

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return F.dropout(x, p, self.training) if p > 0 else x

    def embed(self, tokens: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor | None
              ) -> torch.Tensor:
        a = self.args
        T = tokens.shape[1]
        if T + a.position_offset > a.max_positions and self.pos_emb is not None:
            raise ValueError(f"{T} tokens: more than the model's {a.max_positions} positions")
        x = self.tok_emb(tokens)  # (B, T, e)
        if self.pos_emb is not None:
            pos = torch.arange(T, device=tokens.device) + a.position_offset
            x = x + self.pos_emb(pos)[None]
        if self.type_emb is not None:
            seg = torch.zeros_like(tokens) if segments is None else segments
            x = x + self.type_emb(seg)
        if self.emb_proj is not None:
            x = self.emb_proj(x)
        x = self.emb_norm(x)  # (B, T, dim)
        if a.family == "deberta-v2":  # DeBERTa zeroes the embeddings of padding
            x = x * mask[..., None].to(x.dtype)
        return self._drop(x, a.dropout)

    def hidden(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
               segments: torch.Tensor | None = None) -> torch.Tensor:
        """Last layer's hidden states (B, T, dim); zeros at padding.

        With padding, the layers run on the real tokens only (`unpad`): every per-token
        operation (linears, norms, activation, dropout) skips the padding; only attention
        sees the padded (B, H, T, hd) layout, with the padding masked off as keys. A real
        token's state is the same as in the padded computation (no token sees padding)."""
        a = self.args
        B, T = tokens.shape
        mask = torch.ones_like(tokens) if mask is None else mask
        x = self.embed(tokens, mask, segments)  # (B, T, dim)
        # (B, 1, 1, T) keys that may be attended to; None when there is no padding (faster)
        keep = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        rows = None if keep is None else mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        if rows is not None:
            x = unpad(x, rows)  # (N, dim)
        rel = self._relative(T, tokens.device) if a.relative else None
        ckpt = self.checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            x = (checkpoint(self._layer, layer, x, keep, rel, rows, (B, T), use_reentrant=False)
                 if ckpt else self._layer(layer, x, keep, rel, rows, (B, T)))
        return x if rows is None else pad(x, rows, B, T)

    def _relative(self, T: int, device):
        a = self.args
        rel_e = self.rel_emb.weight  # (2 span, dim)
        if self.rel_norm is not None:
            rel_e = self.rel_norm(rel_e)
        rel_e = self._drop(rel_e, a.dropout)
        return relative_positions(T, a.position_buckets, a.max_relative_positions,
                                  a.span, device), rel_e

    def _layer(self, layer: EncoderLayer, x: torch.Tensor, keep: torch.Tensor | None, rel,
               rows: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """One post-LN layer on x (B, T, dim), or on the real tokens x (N, dim) at `rows`."""
        a = self.args
        B, T = shape

        def heads(t):  # (b, T, H*hd) -> (b, H, T, hd)
            return t.view(t.shape[0], -1, a.n_heads, a.head_dim).transpose(1, 2)

        def padded(t):  # (N, c) real tokens -> (B, T, c); (B, T, c) unchanged
            return t if rows is None else pad(t, rows, B, T)

        q, k, v = (heads(padded(t)) for t in qkv(layer, x))  # (B, H, T, hd) each
        if rel is None:
            bias, scale = keep, None
        else:
            factor = 1 + len(a.pos_att_type)
            scale = (a.head_dim * factor) ** -0.5
            idx, rel_e = rel
            pq = heads(layer.pos_q(rel_e[None]) if hasattr(layer, "pos_q")
                       else layer.wq(rel_e[None])) if "p2c" in a.pos_att_type else None
            pk = heads(layer.pos_k(rel_e[None]) if hasattr(layer, "pos_k")
                       else layer.wk(rel_e[None])) if "c2p" in a.pos_att_type else None
            bias = relative_bias(q, k, pq, pk, idx) * scale  # (B, H, T, T)
            if keep is not None:
                bias = bias.masked_fill(~keep, torch.finfo(bias.dtype).min)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale,
                                           dropout_p=a.attn_dropout if self.training else 0.0)
        o = o.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*hd)
        if rows is not None:
            o = unpad(o, rows)  # (N, H*hd)
        h = layer.attn_norm(x + self._drop(layer.wo(o), a.dropout))
        f = layer.w_out(activation(a.act, layer.w_in(h)))
        return layer.ffn_norm(h + self._drop(f, a.dropout))

    def pool(self, h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
        """(B, T, dim) -> (B, dim). 'cls': the first token's state; 'pooler': the folder's
        pooler on it (BERT: tanh(W h_cls + b), as BertForSequenceClassification; DeBERTa's
        ContextPooler: act(W h_cls + b)); 'mean': the mean over real tokens (as
        sentence-transformers pools all-MiniLM-L6-v2)."""
        if how == "mean":
            m = mask.to(h.dtype)[..., None]  # (B, T, 1)
            return (h * m).sum(1) / m.sum(1).clamp_min(1)
        first = h[:, 0]
        if how == "pooler":
            act = "tanh" if self.args.family != "deberta-v2" else self.args.pooler_act
            return activation(act, self.pooler(first))
        return first


def qkv(layer: EncoderLayer, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values (..., H*hd) each, as one matrix product with the three
    projections stacked ((3 H*hd, dim): one GEMM reads x once; the same sums as three)."""
    w = torch.cat([layer.wq.weight, layer.wk.weight, layer.wv.weight])  # (3 H*hd, dim)
    b = torch.cat([layer.wq.bias, layer.wk.bias, layer.wv.bias])  # (3 H*hd,)
    return linear(x, w, b).chunk(3, dim=-1)


def unpad(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, T, c) -> (N, c): the tokens at flat indices `rows` (the mask's nonzeros)."""
    return x.reshape(-1, x.shape[-1]).index_select(0, rows)


def pad(x: torch.Tensor, rows: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """(N, c) -> (B, T, c): the inverse of `unpad`, zeros at padding."""
    return x.new_zeros(B * T, x.shape[-1]).index_copy(0, rows, x).view(B, T, -1)


def hf_names(args: EncoderArgs, has_pooler: bool) -> dict[str, str]:
    """Our parameter name -> the HF tensor name (without a 'bert.'-style prefix)."""
    deb = args.family == "deberta-v2"
    out = {"tok_emb.weight": "embeddings.word_embeddings.weight"}
    ln = ("weight", "bias")
    if args.absolute_positions:
        out["pos_emb.weight"] = "embeddings.position_embeddings.weight"
    if args.type_vocab_size > 0:
        out["type_emb.weight"] = "embeddings.token_type_embeddings.weight"
    if (args.embedding_size or args.dim) != args.dim:
        out["emb_proj.weight"] = "embeddings.embed_proj.weight"
    for s in ln:
        out[f"emb_norm.{s}"] = f"embeddings.LayerNorm.{s}"
    sub = {"wq": "attention.self.query", "wk": "attention.self.key",
           "wv": "attention.self.value", "wo": "attention.output.dense",
           "attn_norm": "attention.output.LayerNorm", "w_in": "intermediate.dense",
           "w_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    if deb:
        sub.update(wq="attention.self.query_proj", wk="attention.self.key_proj",
                   wv="attention.self.value_proj")
        if args.relative and not args.share_att_key:
            if "c2p" in args.pos_att_type:
                sub["pos_k"] = "attention.self.pos_key_proj"
            if "p2c" in args.pos_att_type:
                sub["pos_q"] = "attention.self.pos_query_proj"
    for i in range(args.n_layers):
        for ours, theirs in sub.items():
            for s in ln:
                out[f"layers.{i}.{ours}.{s}"] = f"encoder.layer.{i}.{theirs}.{s}"
    if args.relative:
        out["rel_emb.weight"] = "encoder.rel_embeddings.weight"
        if args.norm_rel_ebd:
            for s in ln:
                out[f"rel_norm.{s}"] = f"encoder.LayerNorm.{s}"
    if has_pooler:
        for s in ln:
            out[f"pooler.{s}"] = f"pooler.dense.{s}"
    return out
