"""Tiny random encoder folders (BERT, RoBERTa, DeBERTa-v2/v3) written with `transformers`,
with a small word-level tokenizer.json using each family's pair template."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

WORDS = ("the cat dog sat on a mat ran to park was happy sad big small red blue what why "
         "how is are you me it good bad yes no answer question one two three").split()


def write_tokenizer(folder: Path, family: str) -> int:
    """Word-level tokenizer with the family's specials and template; returns the vocab size."""
    if family == "roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        cls, sep, unk = "<s>", "</s>", "<unk>"
        pair = f"{cls} $A {sep} {sep} $B {sep}"
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        cls, sep, unk = "[CLS]", "[SEP]", "[UNK]"
        pair = f"{cls} $A {sep} $B:1 {sep}:1"
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens(specials)
    tk.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair,
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tk.save(str(folder / "tokenizer.json"))
    return len(vocab)


def hf_config(family: str, vocab: int, **kw):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=64)
    if family == "bert":
        return tf.BertConfig(**common, **kw)
    if family == "roberta":
        return tf.RobertaConfig(**common, pad_token_id=1, type_vocab_size=1, **kw)
    if family == "deberta-v2":  # DeBERTa-v2 defaults: c2p|p2c, own position projections
        return tf.DebertaV2Config(**common, relative_attention=True, pos_att_type=["c2p", "p2c"],
                                  max_relative_positions=-1, type_vocab_size=2, **kw)
    if family == "deberta-v3":  # v3: log buckets, shared keys, no absolute positions
        return tf.DebertaV2Config(**common, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                  position_buckets=16, max_relative_positions=-1,
                                  share_att_key=True, norm_rel_ebd="layer_norm",
                                  position_biased_input=False, type_vocab_size=0, **kw)
    raise ValueError(family)


def make_encoder_folder(folder: Path, family: str = "bert", seed: int = 0, **kw):
    """A random tiny HF encoder model saved to `folder` -> the HF model (eval mode)."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder, "roberta" if family == "roberta" else "bert")
    torch.manual_seed(seed)
    model = tf.AutoModel.from_config(hf_config(family, vocab, **kw)).eval()
    with torch.no_grad():  # LayerNorms away from 1/0 so a missed tensor shows
        for n, p in model.named_parameters():
            if "LayerNorm" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model
