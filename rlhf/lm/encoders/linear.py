"""The encoders' linear layers on CPU in fp32: the same y = x W^T + b as `nn.Linear`, with the
three matrix products of a training step (forward, input gradient, weight gradient) run by
oneDNN's matmul instead of ATen's BLAS (MKL).

Why: on the AMD EPYC (Zen) CPUs this project is measured on, MKL's fp32 GEMM takes a code
path that reaches ~60 GFLOP/s on one thread while oneDNN's (avx512) reaches ~120-180 GFLOP/s
on the same shapes, and these products are ~70% of an encoder training step
(docs/issue-14.md, "TRL comparison"). Only the kernel differs: fp32 in, fp32 accumulation,
fp32 out, so results equal `F.linear` up to the order of the sums (tests/test_encoders.py).

Used only where it applies (CPU tensors, fp32, no autocast, PyTorch built with oneDNN);
anything else (CUDA, bf16 or autocast, a build without oneDNN) goes through `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
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
        return _matmul(x, w, b)  # (..., n)

    @staticmethod
    def backward(ctx, dy):  # dy (..., n)
        x, w = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _matmul(dy, w.t(), None)  # (..., k): dy @ W
        dy2 = dy.reshape(-1, dy.shape[-1])  # (rows, n)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])  # (rows, k)
            dw = _matmul(dy2.t().contiguous(), x2.t().contiguous(), None)  # (n, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)  # (n,)
        return dx, dw, db


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., k) @ w (n, k)^T + b (n,) -> (..., n), on oneDNN where `onednn_usable`."""
    if onednn_usable(x, w):
        return _OneDNNLinear.apply(x, w, b)
    return F.linear(x, w, b)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, names and initialisation) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
