"""The FLOP counts and shapes the `--shape` benchmarks share (`benchmarks/shapes.py`)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shapes  # noqa: E402

from rlhf.lm.model import ModelArgs  # noqa: E402


def test_shapes_have_the_real_models_parameter_counts():
    # the published counts: SmolLM2-135M 134,515,008; Qwen2-0.5B 494,032,768 (tied embeddings)
    assert ModelArgs(**shapes.SHAPES["smollm2-135m"]).num_params() == 134_515_008
    assert ModelArgs(**shapes.SHAPES["qwen2-0.5b"]).num_params() == 494_032_768


def test_flop_counts_by_hand():
    # 2*N*T + 2*layers*ctx*width*T = 2*100*10 + 2*2*5*4*10 = 2000 + 800
    assert shapes.forward_flops(100, 10, 2, 5, 4) == 2800
    assert shapes.train_flops(100, 10, 2, 5, 4) == 3 * 2800
    assert shapes.train_flops(100, 10) == 6000  # 6*N*T, attention left out


def test_matmul_weights_count_the_output_layer_not_the_lookup():
    # dim 4, hidden 8, 1 layer, 2 heads of 2, 1 kv head, vocab 10, tied:
    # q 4*4 + kv 2*2*4 + o 4*4 + mlp 3*4*8 = 16 + 16 + 16 + 96 = 144, output 10*4 = 40,
    # norm gains 2*4 + 4 = 12; the 10*4 lookup not counted
    args = ModelArgs(dim=4, hidden_dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=10)
    assert shapes.matmul_weights(args) == 196
    assert shapes.shape_of(args) == (196, 1, 4)


def test_efficiency_fields():
    out = shapes.efficiency(100e9, 25e9, None)
    assert out == {"peak_gflops": 100.0, "achieved_gflops": 25.0, "mfu": 0.25,
                   "trl_achieved_gflops": None, "trl_mfu": None}
    out = shapes.efficiency(100e9, 25e9, 40e9, "hf", peer_peak=200e9)
    assert out["hf_mfu"] == 0.2 and out["hf_achieved_gflops"] == 40.0


def test_shape_argument_accepts_any_case():
    import argparse

    p = argparse.ArgumentParser()
    shapes.add_arguments(p)
    a = p.parse_args(["--shape", "stories260K"])
    assert (a.shape, a.device, shapes.label(a.shape)) == ("stories260k", "cpu", "stories260K")
    with pytest.raises(SystemExit):
        p.parse_args(["--shape", "gpt-5"])
