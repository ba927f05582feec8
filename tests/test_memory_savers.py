"""Memory savers (rlhf.lm.memory): gradient checkpointing gives the plain pass's loss and
gradients and really recomputes; the policy stage's gradient accumulation gives the whole
batch's update; bf16 weights halve the frozen weights' memory and a step still runs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from test_train_policy import even_token_share, prompt_file, tiny_cfg, tiny_folder  # noqa: F401

from rlhf.config import ConfigError, load_config
from rlhf.harness.run import Handover
from rlhf.lm.encoders.config import EncoderArgs
from rlhf.lm.encoders.model import Encoder
from rlhf.lm.folders import load_model
from rlhf.lm.generation import Generation
from rlhf.lm.linear import linear
from rlhf.lm.logprobs import response_logprobs
from rlhf.lm.memory import apply_memory, keep_frozen_in, set_checkpointing, weight_bytes
from rlhf.policy.config import PolicyTrainConfig
from rlhf.policy.train import train, update
from rlhf.reward.model import RewardModel

# ----------------------------------------------------------------------------- checkpointing


def padded_batch(B: int, T: int, vocab: int, seed: int = 0):
    """Random tokens (B, T) with a mask holding left and right padding of several widths."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    mask[1, -4:] = 0  # right padding
    return tokens, mask


def grads_of(model, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


def blocks_run(model, blocks, loss_fn) -> tuple[int, int]:
    """(block forward calls, bytes saved for backward outside checkpointed regions) of one
    forward + backward: torch's saved-tensor hooks see what autograd keeps, and a
    checkpointed block's internals are kept by the checkpoint's own hooks instead. Calls are
    counted by wrapping each block's `forward` (checkpoint's recomputation skips module
    hooks)."""
    calls, saved = [0], [0]

    def counted(forward):
        def f(*a, **kw):
            calls[0] += 1
            return forward(*a, **kw)
        return f

    for b in blocks:
        b.forward = counted(b.forward)

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model)
    loss.backward()
    for b in blocks:
        del b.forward  # the class's again
    return calls[0], saved[0]


def causal_loss(tokens, mask):
    def f(model):
        logits = model(tokens, mask)  # (B, T, V)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                               reduction="none").mul(mask[:, 1:].flatten()).mean()
    return f


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_checkpointed_backward_equals_plain_causal(family):
    kw = dict(family=family, hf_type=family)
    if family != "llama":
        kw.update(n_kv_heads=4, act="gelu_new", norm_eps=1e-5)
    model = tiny_model(seed=1, n_layers=3, **kw).train()
    loss_fn = causal_loss(*padded_batch(3, 12, model.args.vocab_size))
    loss0, g0 = grads_of(model, loss_fn)
    calls0, saved0 = blocks_run(model, model.layers, loss_fn)
    assert set_checkpointing(model, True) == 1
    loss1, g1 = grads_of(model, loss_fn)
    calls1, saved1 = blocks_run(model, model.layers, loss_fn)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=0)
    assert g1.keys() == g0.keys() and len(g0) == len(list(model.parameters()))
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-6, atol=1e-9, msg=name)
    # really on: every block runs again in the backward pass, far less is kept
    assert (calls0, calls1) == (3, 6)
    assert saved1 < saved0 / 3, (saved0, saved1)
    with torch.no_grad():  # no gradients: no recomputation, nothing extra
        assert blocks_run_eval(model) == 3


def blocks_run_eval(model) -> int:
    calls = [0]
    hs = [b.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
          for b in model.layers]
    model(torch.ones(1, 4, dtype=torch.long))  # not checkpointed: the hooks run
    for h in hs:
        h.remove()
    return calls[0]


def encoder(family: str) -> Encoder:
    torch.manual_seed(2)
    common = dict(vocab_size=64, dim=32, n_layers=3, n_heads=4, head_dim=8, hidden_dim=48,
                  max_positions=32, pad_id=0, eps=1e-7, act="gelu", dropout=0.1,
                  attn_dropout=0.1)
    if family == "bert":
        args = EncoderArgs(family="bert", type_vocab_size=2, **common)
    else:  # DeBERTa-v3: relative positions, c2p + p2c, log buckets, shared keys
        args = EncoderArgs(family="deberta-v2", type_vocab_size=0, absolute_positions=False,
                           relative=True, pos_att_type=["c2p", "p2c"], position_buckets=8,
                           max_relative_positions=32, share_att_key=True, norm_rel_ebd=True,
                           **common)
    model = Encoder(args).train()
    for p in model.parameters():  # LayerNorm weights off their init, so every grad differs
        p.data.add_(0.02 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_checkpointed_backward_equals_plain_encoder(family):
    model = encoder(family)
    tokens, mask = padded_batch(3, 10, 64, seed=3)
    mask[0, :3] = 1  # encoders are right-padded
    target = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(4))

    def loss_fn(m):
        torch.manual_seed(5)  # the same dropout masks in both runs
        return (m.hidden(tokens, mask) * target).sum()

    norms = [layer.ffn_norm for layer in model.layers]  # one call per layer's pass
    loss0, g0 = grads_of(model, loss_fn)
    calls0, saved0 = blocks_run(model, norms, loss_fn)
    assert set_checkpointing(model, True) == 1
    loss1, g1 = grads_of(model, loss_fn)
    calls1, saved1 = blocks_run(model, norms, loss_fn)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=0)
    assert g1.keys() == g0.keys() and len(g0) == len(list(model.parameters()))
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-6, atol=1e-8, msg=name)
    assert (calls0, calls1) == (3, 6)
    assert saved1 < saved0 / 2, (saved0, saved1)


# ----------------------------------------------------------------------------- accumulation


def sampled_batch(model, B: int = 10, P: int = 4, N: int = 6) -> Generation:
    """A batch as `generate` returns it: left-padded prompts, responses of several lengths."""
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(1, model.args.vocab_size, (B, P + N), generator=g)
    mask = torch.ones(B, P + N, dtype=torch.long)
    mask[::3, :2] = 0  # left-padded prompts
    lengths = torch.randint(1, N + 1, (B,), generator=g)
    response_mask = (torch.arange(N)[None] < lengths[:, None]).long()  # (B, N)
    mask[:, P:] = response_mask
    gen = Generation(tokens=tokens, mask=mask, prompt_width=P, response_mask=response_mask,
                     logprobs=torch.zeros(B, N), ended=lengths < N)
    with torch.no_grad():
        old, _ = response_logprobs(model, gen)
    gen.logprobs = (old + 0.05 * torch.randn(old.shape, generator=g)) * response_mask
    return gen


@pytest.mark.parametrize("over", [
    ["algo.name=rloo"],
    ["algo.name=rloo", "kl.placement=loss", "kl.estimator=k2", "algo.entropy_coef=0.01"],
    ["algo.name=ppo", "algo.ppo_epochs=1", "algo.minibatches=2"],
])
def test_accumulated_micro_batches_give_the_whole_batch_update(over):
    base = tiny_model(seed=3, vocab_size=48).train()
    gen = sampled_batch(base)
    B = gen.tokens.shape[0]
    adv = torch.randn(B, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref_logp = response_logprobs(tiny_model(seed=4, vocab_size=48), gen)[0]
    results = {}
    for n in (1, 3):  # 10 rows in 3 micro-batches (4, 3, 3): unequal shares
        cfg = load_config(PolicyTrainConfig, None, over + ["prompts.batch_prompts=5",
                                                            "algo.k=2", "algo.max_grad_norm=0",
                                                            f"algo.accumulation_steps={n}"])
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)  # the update is the gradient itself
        stats = update(cfg, model, opt, gen, adv, ref_logp, 0.1, 0.5, step=0)
        results[n] = (stats, {k: v.detach() for k, v in model.named_parameters()})
    (s1, p1), (s3, p3) = results[1], results[3]
    assert any(not torch.equal(p1[k], base.state_dict()[k]) for k in p1)  # it moved
    for k in p1:
        torch.testing.assert_close(p3[k], p1[k], rtol=1e-5, atol=1e-7, msg=k)
    assert s3["loss"] == pytest.approx(s1["loss"], rel=1e-5, abs=1e-8)
    assert s3["grad_norm"] == pytest.approx(s1["grad_norm"], rel=1e-5)


def test_accumulation_steps_is_checked_by_key():
    with pytest.raises(ConfigError, match="accumulation_steps"):
        load_config(PolicyTrainConfig, None, ["algo.accumulation_steps=0"])
    with pytest.raises(ConfigError, match="accumulation_steps"):  # 2 prompts x 2 samples
        load_config(PolicyTrainConfig, None, ["prompts.batch_prompts=2", "algo.k=2",
                                              "algo.accumulation_steps=5"])
    with pytest.raises(ConfigError, match="dtype"):
        load_config(PolicyTrainConfig, None, ["model.dtype=fp16"])


# ----------------------------------------------------------------------------- bf16 weights


def test_bf16_frozen_weights_halve_and_trainable_stay_fp32():
    ref = tiny_model(seed=5, tie_embeddings=False).requires_grad_(False)
    fp32 = weight_bytes(ref)
    logits32 = ref(torch.arange(1, 9)[None])
    apply_memory(ref, load_config(PolicyTrainConfig, None, ["model.dtype=bf16"]).model)
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    assert weight_bytes(ref) * 2 == fp32
    logits16 = ref(torch.arange(1, 9)[None])  # runs in bf16, close to the fp32 model
    assert logits16.dtype == torch.bfloat16
    torch.testing.assert_close(logits16.float(), logits32, atol=0.05, rtol=0.05)
    # a reward model probing a frozen backbone: backbone bf16, heads fp32, a step runs
    rm = RewardModel(tiny_model(seed=6), n_members=2)
    rm.backbone.requires_grad_(False)
    trainable = weight_bytes(rm, trainable=True)
    frozen = weight_bytes(rm, trainable=False)
    keep_frozen_in(rm, torch.bfloat16)
    assert weight_bytes(rm, trainable=False) * 2 == frozen
    assert weight_bytes(rm, trainable=True) == trainable and rm.head.weight.dtype == torch.float32
    opt = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=0.1)
    tokens, mask = padded_batch(2, 8, 64)
    mask[0] = 1
    before = rm.head.weight.detach().clone()
    rm.score(tokens, mask).sum().backward()
    opt.step()
    assert torch.isfinite(rm.head.weight).all() and not torch.equal(rm.head.weight, before)


def test_bf16_output_layer_keeps_no_expanded_weight():
    """The output layer reads a strided view (h[:, start:]); on F.linear's path (bf16,
    autocast) that once ran a batched matmul saving the weight expanded B times for backward
    (432 MB at SmolLM2's head and 8 rows). Only the input and the weight itself are kept."""
    w = torch.randn(512, 16, dtype=torch.bfloat16)  # frozen bf16 weight
    h = torch.randn(8, 10, 16, dtype=torch.bfloat16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t):
        y = linear(h[:, 3:], w)  # (8, 7, 512)
    y.sum().backward()
    assert sum(saved) <= w.numel() * 2 + h.numel() * 2, saved
    torch.testing.assert_close(y, F.linear(h[:, 3:].detach(), w))


def test_policy_stage_with_every_saver(tiny_folder, prompt_file, tmp_path):  # noqa: F811
    """One train-policy run with checkpointing, 2 micro-batches and a bf16 reference: the
    reference handed in is kept in bf16, the policy trains in fp32, and the run's first
    step equals the plain run's (same samples; the update changes only by rounding)."""
    ref = load_model(tiny_folder)[0]
    over = ["steps=2", "model.gradient_checkpointing=true", "model.dtype=bf16",
            "algo.accumulation_steps=2"]
    s = train(tiny_cfg(tiny_folder, prompt_file, tmp_path / "a", *over),
              score_fn=even_token_share, hand=Handover(reference=ref))
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    policy = load_model(s["policy"])[0]
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    train(tiny_cfg(tiny_folder, prompt_file, tmp_path / "b", "steps=2"),
          score_fn=even_token_share)
    rows = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
            for k in "ab"}
    assert rows["a"][0]["reward"] == rows["b"][0]["reward"]  # the same first samples
    assert 0 < abs(rows["a"][0]["kl"]) < 0.05  # a bf16 reference: small, not exactly 0
    assert rows["b"][0]["kl"] == pytest.approx(0, abs=1e-4)
