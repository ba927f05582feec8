"""The models' CPU fp32 linear kernel (rlhf.lm.linear, oneDNN's matmul): output and gradients
equal F.linear's, and a causal model's training gradients through it equal transformers'."""

import pytest
import torch
import torch.nn.functional as F

import rlhf.lm.linear as lm_linear
from rlhf.lm.linear import linear, onednn_usable


def test_onednn_linear_equals_f_linear():
    """Output and all three gradients equal F.linear's up to fp32 rounding, also after an
    in-place weight update (no stale packed weight); under bf16 autocast it is F.linear."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 37, 96, generator=g, requires_grad=True)  # (B, T, k)
    w = torch.randn(160, 96, generator=g, requires_grad=True)  # (n, k)
    b = torch.randn(160, generator=g, requires_grad=True)
    dy = torch.randn(4, 37, 160, generator=g)
    if not onednn_usable(x, w):
        pytest.skip("PyTorch built without oneDNN")
    for _ in range(2):
        y = linear(x, w, b)
        assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__
        ours = torch.autograd.grad(y, (x, w, b), dy)
        ref = F.linear(x, w, b)
        theirs = torch.autograd.grad(ref, (x, w, b), dy)
        assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()
        for a, r in zip(ours, theirs):
            assert (a - r).abs().max() <= 1e-5 * r.abs().max()
        with torch.no_grad():
            w.mul_(-0.5)  # the next pass must see the new weights
    small = linear(x[:, :1].detach(), w.detach())  # (4, 1, 160): below MIN_MACS, F.linear
    assert small.shape == (4, 1, 160) and small.grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w, b).dtype == torch.bfloat16


@pytest.mark.parametrize("case", ["llama-linear-bias-headdim-tied", "gpt2"])
def test_causal_gradients_equal_transformers(tmp_path, case, monkeypatch):
    """A policy-gradient-shaped loss (sum of log-probs of the next tokens): logits and every
    parameter's gradient through our model (every linear on oneDNN, the tiny model's products
    included: MIN_MACS 0; tied output head) equal transformers'."""
    pytest.importorskip("transformers")
    monkeypatch.setattr(lm_linear, "MIN_MACS", 0)
    from test_families import V, hf_folder

    from rlhf.lm.folders import load_model
    from rlhf.lm.hf_weights import to_hf_state_dict

    hf, folder = hf_folder(tmp_path, case)
    ours, _ = load_model(folder)
    x = torch.randint(0, V, (3, 14), generator=torch.Generator().manual_seed(1))
    logits, hf_logits = ours(x), hf(x).logits
    assert logits.grad_fn is not None and "OneDNN" in type(logits.grad_fn).__name__
    assert (logits - hf_logits).abs().max() <= 1e-4
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None]).sum()
    lp.backward()
    hf_lp = torch.log_softmax(hf_logits[:, :-1], -1).gather(-1, x[:, 1:, None]).sum()
    hf_lp.backward()
    grads = to_hf_state_dict(ours, {k: p.grad for k, p in ours.named_parameters()})
    theirs = {k: p.grad for k, p in hf.named_parameters()}
    assert len(grads) >= 10
    for name, g in grads.items():
        ref = theirs[name]
        assert (g - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6, name
