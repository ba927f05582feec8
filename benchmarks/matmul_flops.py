"""Measure this machine's fp32 matmul FLOP/s (the ceiling training is compared against).

    python benchmarks/matmul_flops.py [--threads 1] [--size 1024]

Prints one JSON line: {"threads", "size", "flops": best FLOP/s of n x n @ n x n, "gflops"}.
`measure(threads, size)` is importable by other benchmarks. Best of several repeats, because
the machine may be shared (the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def measure(threads: int = 1, size: int = 1024, repeats: int = 5, dtype=torch.float32) -> float:
    """Best FLOP/s of a (size x size) @ (size x size) matmul: 2 * size^3 per product."""
    if threads > 0:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    n = max(1, int(2e9 / (2 * size**3)))  # about 2 GFLOP per repeat
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            a @ b
        best = max(best, 2 * size**3 * n / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=1024)
    a = p.parse_args()
    flops = measure(a.threads, a.size)
    print(json.dumps({"threads": a.threads, "size": a.size, "flops": flops,
                      "gflops": round(flops / 1e9, 1)}))


if __name__ == "__main__":
    main()
