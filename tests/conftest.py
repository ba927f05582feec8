"""Shared test fixtures: where the shared files are, and tiny in-process models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf.lm.model import ModelArgs, Transformer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STORIES = SHARED / "models" / "stories260K"
PREFS = SHARED / "data" / "preferences"
TEXT = SHARED / "data" / "text" / "tinystories-sample.txt"

torch.set_num_threads(1)


def need_shared(path: Path = STORIES):
    """Skip (with the reason) when the shared files are not beside the project."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared files belong at ../shared (see README)")


def tiny_args(**kw) -> ModelArgs:
    base = dict(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                max_seq_len=64)
    base.update(kw)
    return ModelArgs(**base)


def tiny_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_args(**kw)).eval()


@pytest.fixture
def stories():
    need_shared()
    from rlhf.lm.folders import load_model

    return load_model(STORIES)
