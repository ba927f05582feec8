"""Reward model: scores independent of batch and padding, the true last token, truncation,
files, statistics and ensemble disagreement."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhf.lm.model import ModelArgs, Transformer
from rlhf.preferences.losses import preference_loss
from rlhf.preferences.tokens import encode_pair_side, pack_pairs, pad_right, shared_prefix
from rlhf.reward.model import (
    RewardModel,
    bootstrap_weights,
    disagreement,
    is_right_padded,
    last_index,
    load_reward_model,
    rank_pairs,
    raw_scores,
    save_reward_model,
    score_texts,
    score_tokens,
    set_statistics,
)

TOK = Path(__file__).resolve().parents[2] / "shared/models/stories260K/tok512.bin"


def tiny_rm(n_members=3, seed=0):
    torch.manual_seed(seed)
    args = ModelArgs(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                     vocab_size=64, max_seq_len=64)
    return RewardModel(Transformer(args), n_members, seed).eval()


def pad(seqs, side, pad_id, extra=0):
    T = max(map(len, seqs)) + extra
    tokens = torch.full((len(seqs), T), pad_id)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        tokens[i, sl], mask[i, sl] = torch.tensor(s), 1
    return tokens, mask


SEQS = [[1, 5, 9, 13, 2], [1, 7, 2], [1, 3, 4, 5, 6, 7, 8, 9, 10, 2], [1, 11, 12, 2]]


@torch.no_grad()
def test_score_independent_of_batch_padding_side_and_length():
    rm = tiny_rm()
    alone = torch.cat([rm(torch.tensor([s])) for s in SEQS])  # (4, E), no padding at all
    for side in ("right", "left"):
        for extra in (0, 7):
            tokens, mask = pad(SEQS, side, pad_id=0, extra=extra)
            torch.testing.assert_close(rm(tokens, mask), alone, atol=1e-5, rtol=0)
    # a different batch: the pair's score does not depend on its neighbours
    tokens, mask = pad([SEQS[0], [1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 2]], "left", 0)
    torch.testing.assert_close(rm(tokens, mask)[0], alone[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_mixed_left_and_right_padding():
    rm = tiny_rm()
    tokens = torch.tensor([[0, 1, 5, 9, 2, 0, 0], [1, 7, 2, 0, 0, 0, 0]])
    mask = (torch.arange(7) >= 1) & (torch.arange(7) <= 4)
    mask = torch.stack([mask, torch.arange(7) < 3]).long()
    assert not is_right_padded(mask)
    alone = torch.cat([rm(torch.tensor([[1, 5, 9, 2]])), rm(torch.tensor([[1, 7, 2]]))])
    torch.testing.assert_close(rm(tokens, mask), alone, atol=1e-5, rtol=0)


@torch.no_grad()
def test_pad_equal_to_eos_still_reads_the_true_last_token():
    rm = tiny_rm()
    eos = 2  # pad id == EOS id, as llama2.c and many HF tokenizers
    seqs = [[1, 5, 9, 2], [1, 5, 9, 13, 17, 21, 2]]
    tokens, mask = pad(seqs, "right", pad_id=eos)
    assert tokens[0].tolist() == [1, 5, 9, 2, 2, 2, 2]
    assert last_index(mask).tolist() == [3, 6]  # the real EOS, not the last pad
    alone = rm(torch.tensor([seqs[0]]))
    torch.testing.assert_close(rm(tokens, mask)[:1], alone, atol=1e-5, rtol=0)
    # the naive rule "last position whose token is not pad" would read index 2 instead
    wrong = rm(torch.tensor([[1, 5, 9]]))
    assert not torch.allclose(wrong, alone, atol=1e-4)


def test_last_index_naive_loop():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mask = (torch.rand(5, 9, generator=g) > 0.3).long()
        mask[:, 0] = 1
        naive = [max(t for t in range(9) if mask[b, t]) for b in range(5)]
        assert last_index(mask).tolist() == naive


@torch.no_grad()
def test_batched_scoring_equals_one_at_a_time():
    rm = tiny_rm()
    batched = raw_scores(rm, SEQS, pad_id=0, batch_size=3)
    naive = torch.cat([rm(torch.tensor([s])) for s in SEQS])
    torch.testing.assert_close(batched, naive, atol=1e-5, rtol=0)


# (chosen, rejected): long shared prompts, a 1-token prompt (only BOS shared), one side a
# prefix of the other, identical sides, and different lengths so rows are padded
PAIRS = [([1, 5, 9, 13, 17, 21, 25, 30, 2], [1, 5, 9, 13, 17, 40, 2]),
         ([1, 7, 2], [1, 8, 9, 10, 11, 12, 2]),
         ([1, 3, 4, 5, 2], [1, 3, 4, 5, 2, 6, 2]),
         ([1, 3, 4, 2], [1, 3, 4, 2]),
         ([1, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 50, 51, 2],
          [1, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 60, 2])]


def test_shared_prefix_leaves_each_side_a_token():
    assert shared_prefix([1, 5, 9, 2], [1, 5, 7, 2]) == 2
    assert shared_prefix([1, 3, 2], [1, 3, 2]) == 2  # identical: the EOS stays with each
    assert shared_prefix([1, 3, 4, 5, 2], [1, 3, 4, 5, 2, 6, 2]) == 4


def test_shared_prompt_scores_and_gradients_equal_separate_rows():
    """One packed row per pair (prompt once) gives the scores and parameter gradients of
    chosen and rejected as separate right-padded rows."""
    chosen, rejected = [c for c, _ in PAIRS], [r for _, r in PAIRS]
    target = torch.tensor([1.0, 0.5, 1.0, 1.0, 0.0])
    grads, scores = [], []
    for packed in (False, True):
        rm = tiny_rm().train()
        if packed:
            p = pack_pairs(chosen, rejected, pad_id=0)
            assert p.tokens.shape[1] < 2 * max(map(len, chosen + rejected))
            r = rm(p.tokens, packed=p)  # (2B, E)
        else:
            r = rm(*pad_right(chosen + rejected, 0))  # (2B, E)
        rc, rr = r[:len(PAIRS)], r[len(PAIRS):]
        loss = preference_loss(rc, rr, target.unsqueeze(-1)).mean() + (rc * rr).mean()
        loss.backward()
        scores.append(r.detach())
        grads.append({n: q.grad.clone() for n, q in rm.named_parameters() if q.grad is not None})
    torch.testing.assert_close(scores[1], scores[0], atol=1e-5, rtol=0)
    alone = torch.cat([tiny_rm()(torch.tensor([s])) for s in chosen + rejected])
    torch.testing.assert_close(scores[1], alone.detach(), atol=1e-5, rtol=0)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for n, g in grads[0].items():
        assert g.abs().max() > 0, n
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()),
                                   msg=lambda m, n=n: f"{n}: {m}")


class CharTok:
    """A character tokenizer: id = ord(c) - 90 for a..z (7..32); BOS 1, EOS 2 = pad."""

    bos_id, eos_id, pad_id = 1, 2, 2

    def encode(self, text, bos=True, eos=False):
        return [1] * bos + [ord(c) - 90 for c in text] + [2] * eos


def test_truncation_keeps_the_end_and_is_flagged():
    tok = CharTok()
    ids, cut = encode_pair_side(tok, "abcdef", "xyz", max_len=6)
    assert (ids, cut) == ([1, ord("f") - 90, ord("x") - 90, ord("y") - 90, ord("z") - 90, 2],
                          True)  # prompt cut from the left; response whole; BOS/EOS kept
    ids, cut = encode_pair_side(tok, "ab", "uvwxyz", max_len=5)
    assert ids == [1, ord("x") - 90, ord("y") - 90, ord("z") - 90, 2] and cut  # response end
    ids, cut = encode_pair_side(tok, "ab", "c", max_len=5)
    assert ids == [1, 7, 8, 9, 2] and not cut
    tok.bos_id = None  # a tokenizer with no BOS (Qwen2.5): none is added, one more body token
    ids, cut = encode_pair_side(tok, "abcdef", "xyz", max_len=6)
    assert ids == [ord(c) - 90 for c in "efxyz"] + [2] and cut


def test_save_load_roundtrip_keeps_heads_and_statistics(tmp_path):
    if not TOK.is_file():
        pytest.skip("needs ../shared/models/stories260K/tok512.bin")
    from rlhf.lm.tokenizer import Llama2cTokenizer

    tok = Llama2cTokenizer(TOK)
    torch.manual_seed(0)
    args = ModelArgs(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                     vocab_size=512, max_seq_len=64)
    rm = RewardModel(Transformer(args), 3).eval()
    texts = ["The cat sat.", "A dog ran to the park and back.", "Sun!"]
    seqs = [encode_pair_side(tok, "Hi.", t, 64)[0] for t in texts]
    mean, std = set_statistics(rm, seqs, tok.pad_id)
    s = score_texts(rm, tok, ["Hi."] * 3, texts)
    assert not rm.centred  # a Llama backbone: scale-only (rlhf/reward/model.py, The score)
    assert s.mean().item() == pytest.approx(mean / std, abs=1e-5)
    assert s.std().item() == pytest.approx(1.0, abs=1e-4)
    rm.max_len = 48  # the limit it was trained with travels with it
    save_reward_model(rm, tok, tmp_path / "rm")
    rm2, tok2 = load_reward_model(tmp_path / "rm")
    assert rm2.n_members == 3 and float(rm2.mean) == pytest.approx(mean)
    assert rm2.max_len == 48
    assert float(rm2.std) == pytest.approx(std)
    torch.testing.assert_close(score_texts(rm2, tok2, ["Hi."] * 3, texts), s, atol=1e-5,
                               rtol=0)
    tokens, mask = pad(seqs, "left", tok.pad_id)
    torch.testing.assert_close(score_tokens(rm2, tokens, mask), s, atol=1e-5, rtol=0)
    items = [SimpleNamespace(prompt="Hi.", a=texts[0], b=texts[1])] * 2
    r = rank_pairs(rm2, tok2, items)
    # by hand: the variance over the 3 members of sigmoid(r_a - r_b), population variance
    raw = raw_scores(rm2, [encode_pair_side(tok2, "Hi.", t, 48)[0] for t in texts[:2]],
                     tok2.pad_id)  # (2, E)
    p = torch.sigmoid(raw[0] - raw[1])  # (E,)
    expected = float(((p - p.mean()) ** 2).mean())
    assert len(r) == 2 and r[0] == pytest.approx(expected, rel=1e-5) and r[1] == r[0]
    assert expected > 1e-8  # the members' heads differ, so they disagree


def test_disagreement_by_hand():
    r_a, r_b = torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.zeros(2, 2)
    # member probabilities 0.5 and sigmoid(2) = 0.8807971: variance ((0.8808 - 0.5) / 2)^2
    d = disagreement(r_a, r_b)
    assert d[0].item() == pytest.approx(((0.8807971 - 0.5) / 2) ** 2, abs=1e-7)
    assert d[1].item() == pytest.approx(0.0, abs=1e-9)  # members agree
    assert disagreement(torch.randn(4, 1), torch.randn(4, 1)).abs().max() == 0


def test_bootstrap_weights_are_resample_counts():
    w = bootstrap_weights(50, 4, seed=3)
    assert w.shape == (50, 4)
    torch.testing.assert_close(w.sum(0), torch.full((4,), 50.0))  # n draws per member
    assert (w == 0).any() and not torch.equal(w[:, 0], w[:, 1])  # members differ
    torch.testing.assert_close(w, bootstrap_weights(50, 4, seed=3))  # same seed, same draw
    torch.testing.assert_close(bootstrap_weights(5, 1, 0), torch.ones(5, 1))


def test_members_start_different():
    rm = tiny_rm(n_members=4)
    w = rm.head.weight
    assert not torch.allclose(w[0], w[1])
    assert rm.head.bias is None  # a bias cancels in pairwise losses
