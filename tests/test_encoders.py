"""Encoder backbones (rlhf.lm.encoders) against `transformers` on random tiny configs and on
the shared all-MiniLM-L6-v2 folder; tokenizer template, segments and truncation; strictness."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED, need_shared
from encoder_folders import make_encoder_folder

from rlhf.config import UserError
from rlhf.lm.encoders.folders import is_encoder_folder, load_encoder
from rlhf.lm.encoders.tokenizer import segment_ids

pytest.importorskip("transformers")
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
FAMILIES = ["bert", "roberta", "deberta-v2", "deberta-v3"]


def _batch(vocab: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (3, 20), generator=g)
    mask = torch.ones_like(tokens)
    mask[1, 13:] = 0
    mask[2, 6:] = 0
    segs = torch.zeros_like(tokens)
    segs[:, 8:] = 1
    return tokens, mask, segs


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_equal_transformers(tmp_path, family):
    hf = make_encoder_folder(tmp_path, family)
    loaded = load_encoder(tmp_path)
    enc = loaded.encoder.eval()
    assert loaded.unused == []
    tokens, mask, segs = _batch(hf.config.vocab_size)
    if family in ("roberta", "deberta-v3"):  # one segment type / none
        segs = torch.zeros_like(segs)
    tokens = tokens.masked_fill(mask == 0, hf.config.pad_token_id)
    with torch.no_grad():
        ours = enc.hidden(tokens, mask, segs)
        theirs = hf(input_ids=tokens, attention_mask=mask, token_type_ids=segs).last_hidden_state
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() < 1e-4
    assert ours[real].std() > 0.1  # not trivially equal


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_training_mode_dropout_follows_the_config(tmp_path, family):
    make_encoder_folder(tmp_path, family, hidden_dropout_prob=0.5)
    enc = load_encoder(tmp_path).encoder
    tokens, mask, segs = _batch(enc.args.vocab_size)
    enc.train()
    a, b = enc.hidden(tokens, mask, segs), enc.hidden(tokens, mask, segs)
    assert (a - b).abs().max() > 1e-3
    enc.eval()
    assert torch.equal(enc.hidden(tokens, mask, segs), enc.hidden(tokens, mask, segs))


def test_minilm_embeddings_equal_transformers_on_real_text():
    need_shared(MINILM)
    import transformers as tf

    loaded = load_encoder(MINILM)
    enc, tok = loaded.encoder.eval(), loaded.tokenizer
    assert is_encoder_folder(MINILM) and loaded.unused == []
    hf = tf.AutoModel.from_pretrained(str(MINILM)).eval()
    htok = tf.AutoTokenizer.from_pretrained(str(MINILM))
    pairs = [("How do I bake bread at home?", "Mix flour, water, salt and yeast; knead, "
              "let it rise, then bake at 230 C for about 35 minutes."),
             ("What's the capital of France?", "Paris.")]
    for prompt, response in pairs:
        ids, truncated = tok.encode_pair(prompt, response, 128)
        ref = htok(prompt, response)
        assert not truncated and ids == ref["input_ids"]
        t = torch.tensor([ids])
        seg = segment_ids(t, tok.sep_id, tok.pair_segment)
        assert seg[0].tolist() == ref["token_type_ids"]
        with torch.no_grad():
            ours = enc.pool(enc.hidden(t, None, seg), torch.ones_like(t), "mean")
            theirs = hf(input_ids=t, token_type_ids=seg).last_hidden_state.mean(1)
        assert (ours - theirs).abs().max() < 1e-4
        cos = torch.cosine_similarity(ours, theirs)
        assert cos.item() > 0.99999


def test_truncation_keeps_the_response_and_cuts_the_prompt_start(tmp_path):
    make_encoder_folder(tmp_path, "bert")
    tok = load_encoder(tmp_path).tokenizer
    prompt = "one two three " * 5  # 15 words
    ids, truncated = tok.encode_pair(prompt, "the cat sat", 10)
    words = tok.decode(ids).split()
    assert truncated and len(ids) == 10
    assert words == ["two", "three", "one", "two", "three", "the", "cat", "sat"][-7:] or \
        words[-3:] == ["the", "cat", "sat"]
    assert words[-3:] == ["the", "cat", "sat"] and words[-4] == "three"  # the prompt's end
    ids, truncated = tok.encode_pair(prompt, "the cat sat on a mat " * 3, 10)
    assert truncated and len(ids) == 10 and tok.decode(ids).split()[:3] == ["the", "cat", "sat"]
    ids, truncated = tok.encode_pair("what", "yes", 10)
    assert not truncated and tok.decode(ids, skip_special=False).split() == [
        "[CLS]", "what", "[SEP]", "yes", "[SEP]"]


def test_special_token_text_is_not_a_separator(tmp_path):
    make_encoder_folder(tmp_path, "bert")
    tok = load_encoder(tmp_path).tokenizer
    ids, _ = tok.encode_pair("what [SEP] is", "yes", 32)
    assert ids.count(tok.sep_id) == 2  # the template's two only
    seg = segment_ids(torch.tensor([ids]), tok.sep_id, tok.pair_segment)[0].tolist()
    assert seg == [0] * (len(ids) - 2) + [1, 1]


def test_roberta_template_and_segments(tmp_path):
    make_encoder_folder(tmp_path, "roberta")
    tok = load_encoder(tmp_path).tokenizer
    ids, _ = tok.encode_pair("what", "yes", 32)
    assert tok.decode(ids, skip_special=False).split() == [
        "<s>", "what", "</s>", "</s>", "yes", "</s>"]
    assert tok.pair_segment == 0


@pytest.mark.parametrize("key,value", [("position_embedding_type", "relative_key"),
                                       ("is_decoder", True), ("hidden_act", "swish"),
                                       ("some_new_setting", 3)])
def test_refuses_config_keys_it_does_not_honour(tmp_path, key, value):
    make_encoder_folder(tmp_path, "bert")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=key):
        load_encoder(tmp_path)


def test_refuses_unknown_and_missing_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    make_encoder_folder(tmp_path, "bert")
    f = tmp_path / "model.safetensors"
    sd = load_file(str(f))
    save_file({**sd, "classifier.weight": torch.zeros(2, 32)}, str(f))
    with pytest.raises(UserError, match="classifier.weight"):
        load_encoder(tmp_path)
    sd.pop("encoder.layer.1.output.dense.bias")
    save_file(sd, str(f))
    with pytest.raises(UserError, match="missing tensors: encoder.layer.1.output.dense.bias"):
        load_encoder(tmp_path)


def test_deberta_conv_layer_is_refused(tmp_path):
    make_encoder_folder(tmp_path, "deberta-v2")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["conv_kernel_size"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="conv_kernel_size"):
        load_encoder(tmp_path)


def test_gradients_equal_transformers(tmp_path, monkeypatch):
    """Training numerics: the gradient of every parameter of a BERT encoder (with padding:
    layers on the real tokens only, q/k/v stacked, every product on oneDNN: MIN_MACS 0, and
    the masked attention) equals transformers'."""
    from rlhf.lm import linear as lm_linear
    from rlhf.lm.encoders.model import hf_names

    monkeypatch.setattr(lm_linear, "MIN_MACS", 0)

    hf = make_encoder_folder(tmp_path, "bert")
    enc = load_encoder(tmp_path).encoder.eval()  # eval: no dropout, so the passes are equal
    tokens, mask, segs = _batch(hf.config.vocab_size)
    tokens = tokens.masked_fill(mask == 0, hf.config.pad_token_id)
    probe = torch.randn(*tokens.shape, enc.args.dim, generator=torch.Generator().manual_seed(2))
    real = mask[..., None].float()
    (enc.hidden(tokens, mask, segs) * probe * real).sum().backward()
    (hf(input_ids=tokens, attention_mask=mask, token_type_ids=segs).last_hidden_state
     * probe * real).sum().backward()
    theirs = dict(hf.named_parameters())
    names = hf_names(enc.args, enc.pooler is not None)
    checked = 0
    for name, p in enc.named_parameters():
        if p.grad is None:  # the pooler: not on the path to the hidden states
            continue
        ref = theirs[names[name]].grad
        assert (p.grad - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-7, name
        checked += 1
    assert checked == 5 + 16 * enc.args.n_layers  # embeddings + 6 linears, 2 norms a layer
