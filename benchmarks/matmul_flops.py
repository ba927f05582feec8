"""Measure this machine's fp32 matmul FLOP/s (the ceiling training is compared against).

    python benchmarks/matmul_flops.py [--threads 1] [--size 1024] [--kernels]

Prints one JSON line: {"threads", "size", "flops": best FLOP/s of n x n @ n x n over both CPU
kernels (ATen's BLAS and oneDNN, `rlhf.lm.linear`), "gflops", "blas_gflops", "onednn_gflops"}.
`--kernels` adds one JSON line per model-shaped product (rows x in -> out) with both kernels'
GFLOP/s and their ratio: why the models' linears run on oneDNN on this CPU.
`measure(threads, size)` is importable by other benchmarks. Best of several repeats, because
the machine may be shared (the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlhf.lm.linear import onednn_matmul, onednn_usable  # noqa: E402

# (rows, in, out): SmolLM2-135M's decode step at batch 32 (q/k/v, gate+up, down, output head),
# at batch 8, and a 768-token training step's gate+up
SHAPES = [(32, 576, 960), (32, 576, 3072), (32, 1536, 576), (32, 576, 49152), (8, 576, 3072),
          (768, 576, 3072)]


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), as the figures are quoted with it."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def best_rate(fn, flop: float, repeats: int = 5) -> float:
    """Best FLOP/s of `fn` (about 2 GFLOP per repeat)."""
    fn()  # warm up
    n = max(1, int(2e9 / flop))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, flop * n / (time.perf_counter() - t0))
    return best


def kernels(rows: int, k: int, n: int, repeats: int = 5,
            dtype=torch.float32) -> tuple[float, float]:
    """(BLAS, oneDNN) FLOP/s of x (rows, k) @ W (n, k)^T; oneDNN 0 where it is not used
    (`rlhf.lm.linear` runs only fp32 there)."""
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    blas = best_rate(lambda: F.linear(x, w), 2 * rows * k * n, repeats)
    onednn = best_rate(lambda: onednn_matmul(x, w, None), 2 * rows * k * n, repeats) \
        if onednn_usable(x, w) else 0.0
    return blas, onednn


def measure(threads: int = 1, size: int = 1024, repeats: int = 5, dtype=torch.float32) -> float:
    """Best FLOP/s of a (size x size) @ (size x size) product over both kernels."""
    if threads > 0:
        torch.set_num_threads(threads)
    return max(kernels(size, size, size, repeats, dtype))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--kernels", action="store_true", help="also the model-shaped products")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    blas, onednn = kernels(a.size, a.size, a.size)
    print(json.dumps({"cpu": cpu_name(), "threads": a.threads, "size": a.size,
                      "flops": max(blas, onednn),
                      "gflops": round(max(blas, onednn) / 1e9, 1),
                      "blas_gflops": round(blas / 1e9, 1),
                      "onednn_gflops": round(onednn / 1e9, 1)}))
    for rows, k, n in SHAPES if a.kernels else []:
        blas, onednn = kernels(rows, k, n)
        print(json.dumps({"rows": rows, "in": k, "out": n, "blas_gflops": round(blas / 1e9, 1),
                          "onednn_gflops": round(onednn / 1e9, 1),
                          "ratio": round(onednn / blas, 2)}))


if __name__ == "__main__":
    main()
