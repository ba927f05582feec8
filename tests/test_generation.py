"""Generation: cached log-probs equal a fresh pass, EOS handling, sampling filters, seeds."""

import torch
from conftest import tiny_model

from rlhf.lm.config import SamplingConfig
from rlhf.lm.generation import filter_logits, generate
from rlhf.lm.logprobs import response_logprobs


def prompts():
    return [[1, 5, 6, 7, 8, 9], [1, 10], [1, 11, 12, 13]]


def test_cached_logprobs_equal_full_pass():
    model = tiny_model()
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.8)
    gen = generate(model, prompts(), cfg, eos_id=2, generator=torch.Generator().manual_seed(1))
    ref, _ = response_logprobs(model, gen, temperature=0.8)
    assert torch.allclose(gen.logprobs, ref, atol=1e-5)


def test_stops_at_eos_and_masks_the_rest():
    model = tiny_model()
    with torch.no_grad():  # make EOS (id 2) overwhelmingly likely after 3 steps
        model.output.weight.data[2] = 0
    cfg = SamplingConfig(max_new_tokens=12)
    gen = generate(model, prompts(), cfg, eos_id=2, generator=torch.Generator().manual_seed(0))
    for row, m, ended in zip(gen.responses.tolist(), gen.response_mask.tolist(),
                             gen.ended.tolist()):
        n = sum(m)
        assert m == [1] * n + [0] * (12 - n)  # contiguous, EOS included
        if ended:
            assert row[n - 1] == 2 and 2 not in row[:n - 1]
            assert all(t == 2 for t in row[n:])  # padding after EOS
        else:
            assert n == 12


def test_prompt_padding_does_not_change_greedy_output():
    model = tiny_model()
    cfg = SamplingConfig(greedy=True, max_new_tokens=10)
    alone = generate(model, [prompts()[1]], cfg, eos_id=-1).response_lists()[0]
    batched = generate(model, prompts(), cfg, eos_id=-1).response_lists()[1]
    assert alone == batched


def test_same_seed_same_samples_and_greedy_is_argmax():
    model = tiny_model()
    cfg = SamplingConfig(max_new_tokens=8)
    a = generate(model, prompts(), cfg, 2, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompts(), cfg, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens)
    g = generate(model, [[1, 5]], SamplingConfig(greedy=True, max_new_tokens=1), eos_id=-1)
    assert g.responses[0, 0] == model(torch.tensor([[1, 5]]))[0, -1].argmax()


def test_filter_logits_hand_computed():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k = filter_logits(logits, top_k=2)
    assert torch.isinf(k[0, 2:]).all() and torch.isfinite(k[0, :2]).all()
    p = filter_logits(logits, top_p=0.7)  # 0.5 < 0.7 <= 0.8: keep the first two
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    p = filter_logits(logits, top_p=0.5)  # the first token alone reaches 0.5
    assert torch.isfinite(p[0, :1]).all() and torch.isinf(p[0, 1:]).all()


def test_inverse_cdf_sampler_matches_probabilities():
    from rlhf.lm.generation import sample_from

    probs = torch.tensor([[0.1, 0.6, 0.0, 0.3]]).expand(20000, 4)
    draws = sample_from(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert freq[2] == 0  # a zero-probability token is never drawn
    assert torch.allclose(freq, probs[0], atol=0.015)  # ~4 standard errors at p=0.5
