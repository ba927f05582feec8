"""The model: known numbers, padding invariance, the loaders and the saved folder format."""

import json
import math
import struct

import pytest
import torch
from conftest import STORIES, TEXT, need_shared, tiny_model

from rlhf.lm.folders import load_hf, load_llama2c, load_model, save_model
from rlhf.lm.logprobs import token_logprobs
from rlhf.lm.model import RMSNorm, apply_rope, decode_attention
from rlhf.lm.tokenizer import Llama2cTokenizer


def test_rmsnorm_hand_computed():
    n = RMSNorm(2, eps=0.0)
    out = n(torch.tensor([[3.0, 4.0]]))  # rms = sqrt((9 + 16) / 2) = 3.5355
    assert torch.allclose(out, torch.tensor([[3 / 3.5355339, 4 / 3.5355339]]), atol=1e-6)


def test_rope_rotates_interleaved_pairs():
    x = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 4)  # pairs (1,0) and (0,1)
    rot = torch.polar(torch.ones(1, 1, 2), torch.tensor([[[math.pi / 2, 0.0]]]))  # 90, 0 deg
    out = apply_rope(x, rot).flatten()
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.0, 1.0]), atol=1e-6)


def test_token_logprobs_matches_naive_loop():
    torch.manual_seed(0)
    logits, toks = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    fast = token_logprobs(logits, toks)
    for b in range(2):
        for t in range(4):
            ref = torch.log_softmax(logits[b, t], -1)[toks[b, t + 1]]
            assert abs(float(fast[b, t] - ref)) < 1e-6


def test_decode_attention_matches_naive_loop():
    """One query per (row, head) against S cached keys, grouped heads folded into the batch,
    padded keys masked by the additive bias: equals softmax attention written out per head."""
    torch.manual_seed(0)
    B, Hkv, rep, D, S = 2, 2, 3, 4, 5
    q, k, v = torch.randn(B, Hkv, rep, D), torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, D)
    keep = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)  # row 1 padded
    bias = torch.zeros(B, 1, S).masked_fill(~keep[:, None], float("-inf"))
    qf, kt, vf = (q.reshape(B * Hkv, rep, D), k.transpose(-1, -2).reshape(B * Hkv, D, S),
                  v.reshape(B * Hkv, S, D))
    out = decode_attention(qf, kt, vf, bias.repeat_interleave(Hkv, 0)).view(B, Hkv, rep, D)
    for b in range(B):
        for h in range(Hkv):
            for r in range(rep):
                w = [math.exp(float(q[b, h, r] @ k[b, h, s]) / math.sqrt(D)) if keep[b, s]
                     else 0.0 for s in range(S)]
                ref = sum(wi * v[b, h, s] for s, wi in enumerate(w)) / sum(w)
                assert torch.allclose(out[b, h, r], ref, atol=1e-5)
    unmasked = decode_attention(qf, kt, vf)
    assert torch.allclose(unmasked[:Hkv], out[0].reshape(Hkv, rep, D), atol=1e-6)  # row 0: all


def test_padding_side_and_length_do_not_change_outputs():
    model = tiny_model()
    seq = torch.randint(3, 64, (1, 9))
    ref = model(seq)[0]  # no padding
    for left, right in [(3, 0), (0, 4), (2, 5)]:
        toks = torch.cat([torch.zeros(1, left, dtype=torch.long), seq,
                          torch.zeros(1, right, dtype=torch.long)], 1)
        mask = torch.cat([torch.zeros(1, left), torch.ones(1, 9), torch.zeros(1, right)], 1)
        out = model(toks, mask.long())[0, left:left + 9]
        assert torch.allclose(out, ref, atol=1e-5), (left, right)


def test_known_greedy_story(stories):
    from rlhf.lm.config import SamplingConfig
    from rlhf.lm.sampling import decode_rows, sample

    model, tok = stories
    s = sample(model, tok, ["Once upon a time"], SamplingConfig(greedy=True, max_new_tokens=40),
               None)
    text = decode_rows(tok, s.batches[0])[0]  # prompt + response
    assert text.startswith("Once upon a time, there was a little girl named Lily. "
                           "She loved to play outside in the park.")


def test_llama2c_tokenizer_matches_reference_encoder():
    need_shared(TEXT)
    tok = Llama2cTokenizer(STORIES / "tok512.bin")
    lines = [ln for ln in TEXT.read_text().splitlines() if ln.strip()][:150]
    for line in lines:
        assert tok.encode(line) == tok.encode_unsplit(line)
        assert tok.decode(tok.encode(line)) == line
    assert tok.encode("Hi") == [1, *tok.encode("Hi", bos=False)]
    assert tok.decode(tok.encode("naïve 😀")) == "naïve 😀"  # byte fallback round trip


def test_saved_folder_round_trip_is_exact(stories, tmp_path):
    model, tok = stories
    folder = save_model(model, tok, tmp_path / "policy")
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors",
                                                  "tokenizer.json"}
    assert not (tmp_path / "policy.tmp").exists()
    model2, tok2 = load_model(folder)
    x = torch.tensor([tok.encode("One day, a little dog named Max went to the park.")])
    assert torch.equal(model(x), model2(x))
    need_shared(TEXT)
    for line in [ln for ln in TEXT.read_text().splitlines() if ln.strip()][:60]:
        assert tok2.encode(line) == tok.encode(line)


def test_hf_folder_written_by_test(tmp_path):
    """A tiny untied Llama folder in HF layout, written here, loads with the same outputs."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    from rlhf.lm.folders import hf_config, to_hf_state_dict

    model = tiny_model(seed=3, tie_embeddings=False)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(to_hf_state_dict(model), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(hf_config(model.args)))
    vocab = {f"w{i}": i for i in range(64)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(folder / "tokenizer.json"))
    loaded, tok = load_hf(folder)
    x = torch.tensor([tok.encode("w5 w9 w12 w40")])
    assert x.tolist() == [[5, 9, 12, 40]]  # no post-processor: no BOS, as its authors set it
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_clear_errors_for_missing_or_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="n_embd: missing"):
        load_hf(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.bin").write_bytes(struct.pack("<7i", 8, 16, 1, 2, 2, 10, 16))
    (bad / "tok.bin").write_bytes(b"")
    with pytest.raises(ValueError):
        load_llama2c(bad)
