"""What the `--shape` benchmarks share: the model shapes, the machine's description, its
measured matmul peak and the FLOP counts that turn a speed into a fraction of that peak (MFU).

Shapes: `stories260k` (the pretrained llama2.c model in ../shared), `smollm2-135m` and
`qwen2-0.5b` (random weights in the real models' shapes, saved with `save_model` so that
transformers loads them as `LlamaForCausalLM` / `Qwen2ForCausalLM`; stories260K's tokenizer,
which uses only the first 512 ids of the vocabulary). Random weights: only speed is measured
on those shapes, the losses and accuracies are those of an untrained model.

MFU here = achieved FLOP/s / the best FLOP/s of a square matmul measured in the same process
(`benchmarks/matmul_flops.py` on a CPU; a CUDA matmul on a GPU), with the FLOPs counted from
the shape and the real (unpadded) tokens, not measured: a padded or recomputing trainer does
more work than is counted and scores lower, which is the point of the comparison.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from matmul_flops import cpu_name, measure  # noqa: E402

from rlhf.lm.model import ModelArgs, Transformer, flops_per_token  # noqa: E402

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"

SHAPES: dict[str, dict | None] = {
    "stories260k": None,  # the pretrained weights in ../shared
    "smollm2-135m": dict(dim=576, hidden_dim=1536, n_layers=30, n_heads=9, n_kv_heads=3,
                         vocab_size=49152, max_seq_len=2048, norm_eps=1e-5,
                         rope_theta=100000.0, tie_embeddings=True),
    "qwen2-0.5b": dict(dim=896, hidden_dim=4864, n_layers=24, n_heads=14, n_kv_heads=2,
                       vocab_size=151936, max_seq_len=2048, norm_eps=1e-6,
                       rope_theta=1000000.0, tie_embeddings=True, hf_type="qwen2",
                       qkv_bias=True),
}
"""Shape name -> `ModelArgs` fields (None: load the pretrained stories260K)."""

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def add_arguments(p, default: str = "stories260k") -> None:
    """--shape (any case: `stories260K` works too) and --device, the same in every script."""
    p.add_argument("--shape", type=str.lower, default=default, choices=list(SHAPES),
                   help="stories260k (pretrained) or random weights of a real model's shape")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def label(shape: str) -> str:
    """The name a JSON line quotes (stories260K keeps its folder's spelling)."""
    return STORIES.name if shape == "stories260k" else shape


def start_model(shape: str, out: Path) -> Path:
    """The HF folder every trainer of a benchmark starts from (out / "init")."""
    from rlhf.lm.folders import load_model, save_model

    model, tok = load_model(STORIES)
    if SHAPES[shape] is not None:
        torch.manual_seed(0)
        model = Transformer(ModelArgs(**SHAPES[shape]))
    return save_model(model, tok, out / "init")


def cpu_info() -> dict:
    """{"cpu": model name from /proc/cpuinfo, "flags": the SIMD flags matmuls use that this
    CPU has (avx2, avx512f, avx512_bf16, amx_*)}."""
    info = Path("/proc/cpuinfo")
    flags: set[str] = set()
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {"cpu": cpu_name(), "flags": [f for f in SIMD_FLAGS if f in flags]}


def device_info(device: str) -> dict:
    """cpu_info(), plus the GPU's name on cuda."""
    gpu = {"gpu": torch.cuda.get_device_name()} if device == "cuda" else {}
    return {**cpu_info(), **gpu}


def matmul_peak(threads: int, dtype=torch.float32, device: str = "cpu") -> float:
    """Best FLOP/s of a square matmul: `matmul_flops.measure` (1024^3, both CPU kernels,
    3 repeats) on a CPU; a 4096^3 product on a GPU (TF32 as torch is set, off by default)."""
    if device == "cpu":
        return measure(threads, 1024, repeats=3, dtype=dtype)
    n = 4096
    x, y = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = 0.0
    for _ in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            x @ y
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def matmul_weights(args: ModelArgs) -> float:
    """N: the parameters each token is multiplied by: every parameter but the embedding lookup,
    the (tied) output layer counted; norm gains and biases included as in Kaplan et al.'s N
    (a fraction of a percent). = `flops_per_token(args, 0) / 2`."""
    return flops_per_token(args, 0) / 2


def forward_flops(n_params: float, tokens: float, n_layers: int = 0, ctx: float = 0,
                  width: int = 0) -> float:
    """Forward FLOPs of `tokens` tokens: 2·N·T + 2·n_layers·ctx·width·T (Kaplan et al. 2020,
    table 1: 2 FLOPs per weight per token; attention scores and values over `ctx` positions of
    `width` = heads x head_dim, causal, so each token sees about half the window and the
    two products cost 2·ctx·width). Pass ctx = the sequence's length; 0 leaves attention out."""
    return 2.0 * n_params * tokens + 2.0 * n_layers * ctx * width * tokens


def train_flops(n_params: float, tokens: float, n_layers: int = 0, ctx: float = 0,
                width: int = 0) -> float:
    """Training FLOPs (forward + backward) of `tokens` tokens: 3 x `forward_flops`, i.e.
    6·N·T + 6·n_layers·ctx·width·T (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022,
    appendix B, without recomputation: rematerialised activations are not counted)."""
    return 3.0 * forward_flops(n_params, tokens, n_layers, ctx, width)


def shape_of(args: ModelArgs) -> tuple[float, int, int]:
    """(N, n_layers, attention width): the arguments the FLOP counts take after the tokens."""
    return matmul_weights(args), args.n_layers, args.n_heads * args.head_dim


def efficiency(peak: float, ours: float, peer: float | None, peer_name: str = "trl",
               peer_peak: float | None = None) -> dict:
    """The JSON fields of both sides' FLOP/s: peak_gflops, achieved_gflops, mfu (= achieved /
    peak), and the peer's `<peer_name>_achieved_gflops`, `<peer_name>_mfu` (None if not run;
    against `peer_peak` where the peer ran in another precision)."""
    def gf(x):
        return None if x is None else round(x / 1e9, 2)

    peer_mfu = None if peer is None else round(peer / (peer_peak or peak), 4)
    return {"peak_gflops": gf(peak), "achieved_gflops": gf(ours), "mfu": round(ours / peak, 4),
            f"{peer_name}_achieved_gflops": gf(peer), f"{peer_name}_mfu": peer_mfu}
