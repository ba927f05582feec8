"""The linear layers of every model here (causal families and encoders) on CPU in fp32: the
same y = x W^T + b as `nn.Linear`, with the three matrix products of a training step (forward,
input gradient, weight gradient) run by oneDNN's matmul instead of ATen's BLAS (MKL).

Why: on the AMD EPYC (Zen) CPUs this project is measured on, MKL's fp32 GEMM takes a slower
code path than oneDNN's on the same shapes: `benchmarks/matmul_flops.py --kernels` (1 thread,
shared machine, best of 5) gave 1024^3 213 vs 98 GFLOP/s; SmolLM2-135M's decode step at 32
rows 1.0x (q/k/v), 1.8x (gate+up, down), 2.2x (the 49,152-token output head), 1.6x at 8 rows;
a 768-row training product 2.3x. These products are most of a decode step and of a training
step. Only the kernel differs: fp32 in, fp32 accumulation, fp32 out, so results equal
`F.linear` up to the order of the sums (tests/test_linear.py; the families stay within 1e-4
of transformers, gradients included).

Used only where it applies (CPU tensors, fp32, no autocast, PyTorch built with oneDNN);
anything else (CUDA, bf16 or autocast, a build without oneDNN) goes through `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_MACS = 1_500_000
"""Smallest product (rows x in x out multiply-adds) run on oneDNN: its ~15 us fixed cost per
call loses below it (stories260K's 64-wide layers: 7.7 vs 20.4 us at 32 x 64 -> 128; a batch-1
decode step of SmolLM2's q/k/v, 0.55M MACs, 32 vs 40 us) and wins above (1.8M: 1.2x, 2.8M:
1.6x on this CPU)."""


def onednn_matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's x @ w^T + b: x (..., k), w (n, k) (any strides), b (n,) or None -> (..., n)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def onednn_usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """True where `linear` runs on oneDNN: CPU fp32 tensors, autocast off, oneDNN built in."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b; backward: dx = dy W, dW = dy^T x, db = sum over rows of dy."""

    @staticmethod
    def forward(ctx, x, w, b):  # x (..., k), w (n, k), b (n,) or None
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return onednn_matmul(x, w, b)  # (..., n)

    @staticmethod
    def backward(ctx, dy):  # dy (..., n)
        x, w = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = onednn_matmul(dy, w.t(), None)  # (..., k): dy @ W
        dy2 = dy.reshape(-1, dy.shape[-1])  # (rows, n)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])  # (rows, k)
            dw = onednn_matmul(dy2.t().contiguous(), x2.t().contiguous(), None)  # (n, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)  # (n,)
        return dx, dw, db


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., k) @ w (n, k)^T + b (n,) -> (..., n), on oneDNN where `onednn_usable` and the
    product is large enough (MIN_MACS) to pay for oneDNN's fixed cost per call."""
    if x.numel() * w.shape[0] >= MIN_MACS and onednn_usable(x, w):
        return _OneDNNLinear.apply(x, w, b)
    if x.dim() > 2 and not x.is_contiguous():  # F.linear on a strided (B, T, k) view runs a
        x = x.contiguous()  # batched matmul that saves w expanded B times for backward
    return F.linear(x, w, b)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, names and initialisation) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
