"""DeBERTa's disentangled attention (He et al. 2021, section 3.1, eq. 2-4), as pure functions.

The attention logit of query i and key j is the sum of content-to-content (q_i . k_j),
content-to-position (q_i . Kr[d(i, j)], "c2p") and position-to-content (k_j . Qr[d(j, i)],
"p2c"), all divided by sqrt(3 d) (sqrt((1 + number of relative terms) d)). d(i, j) is the
relative distance i - j clamped to [-span, span), and with `position_buckets` > 0 compressed
logarithmically beyond half the buckets (DeBERTa-v2/v3's `make_log_bucket_position`).
Kr, Qr are the relative embeddings projected by the layer's key and query projections
(share_att_key, v3) or by their own `pos_key_proj` / `pos_query_proj`.
"""

from __future__ import annotations

import math

import torch


def log_bucket(rel: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """Relative distances (T, T) -> bucketed distances: unchanged within +-buckets/2, then
    sign * (mid + ceil(log(|d| / mid) / log((max_position - 1) / mid) * (mid - 1)))."""
    sign = torch.sign(rel)
    mid = buckets // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid)
                         * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel.to(log_pos.dtype), log_pos * sign).long()


def relative_positions(T: int, buckets: int, max_position: int, span: int, device
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices into the 2 * span relative embeddings: (c2p (T, T), p2c (T, T)).
    c2p[i, j] = clamp(d(i - j) + span); p2c[j, i] = clamp(-d(j - i) + span) as `relative_bias`
    gathers it (key-major, then transposed)."""
    ids = torch.arange(T, device=device)
    rel = ids[:, None] - ids[None, :]  # (T, T) i - j
    if buckets > 0 and max_position > 0:
        rel = log_bucket(rel.float(), buckets, max_position)
    c2p = (rel + span).clamp(0, 2 * span - 1)
    p2c = (-rel + span).clamp(0, 2 * span - 1)
    return torch.stack([c2p, p2c])


def relative_bias(q: torch.Tensor, k: torch.Tensor, pos_q: torch.Tensor | None,
                  pos_k: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    """c2p + p2c logits before scaling. q, k (B, H, T, hd); pos_q, pos_k (1, H, 2 span, hd)
    or None when that term is off; idx (2, T, T) from `relative_positions` -> (B, H, T, T)."""
    B, H, T, _ = q.shape
    out = torch.zeros(B, H, T, T, dtype=q.dtype, device=q.device)
    if pos_k is not None:
        c2p = q @ pos_k.transpose(-1, -2)  # (B, H, T, 2 span)
        out = out + torch.gather(c2p, -1, idx[0].expand(B, H, T, T))
    if pos_q is not None:
        p2c = k @ pos_q.transpose(-1, -2)  # (B, H, T keys, 2 span)
        out = out + torch.gather(p2c, -1, idx[1].expand(B, H, T, T)).transpose(-1, -2)
    return out
