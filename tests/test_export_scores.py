"""An exported reward model scores in plain transformers as in the project, and every exported
folder has a model card (rlhf/reward/seqcls.py, rlhf/lm/cards.py).

Plain means: `AutoTokenizer` and `AutoModelForSequenceClassification` on the folder, one
`tok(prompt + response)` call (batched with padding, or truncated), nothing added by hand,
for every family: GPT-2/NeoX fold the centring constant into the final LayerNorm bias; the
RMSNorm families (no weight can carry a constant) have scale-only scores, so their logit is
the score too.
The models are random tiny transformers models of the six causal families (every parameter
perturbed, tests/test_reward_seqcls.py `build`), with a byte-level BPE tokenizer trained here
(Qwen2's pre-tokenizer, so that the class AutoTokenizer picks for qwen2, Qwen2Tokenizer,
rebuilds the same tokenizer from the file).
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_reward_seqcls import build

transformers = pytest.importorskip("transformers")

from rlhf.lm.cards import card_from_meta, render_card, set_metrics  # noqa: E402
from rlhf.lm.folders import load_hf, save_model  # noqa: E402
from rlhf.lm.hf_config import ModelConfigError  # noqa: E402
from rlhf.preferences.tokens import encode_pair_side  # noqa: E402
from rlhf.reward.model import (  # noqa: E402
    RewardModel,
    load_reward_model,
    save_reward_model,
    score_texts,
    set_statistics,
)
from rlhf.reward.seqcls import fold_offset  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox"]
FOLDED = {"gpt2", "gpt_neox"}  # a final LayerNorm with a bias: the offset goes into it
VOCAB = 320
CORPUS = ["Once upon a time there was a little dog named Tom.",
          "The cat sat on the mat and looked at the sun.",
          "Lily liked to play with her red ball in the park.",
          "One day, a big bird flew over the tall green tree!"] * 4
PROMPTS = ["Once upon a time", "The cat", "Lily liked to play with her ball. One day,", "Tom"]
RESPONSES = [" there was a dog.", " sat on the mat and looked up at the big sun.",
             " she saw a bird.", " ran!"]


def bpe_tokenizer(folder):
    """A byte-level BPE tokenizer.json (<pad> 0, <s> 1, </s> 2; VOCAB ids at most) with the
    pre-tokenizer, normaliser and decoder of transformers' Qwen2Tokenizer, and a ByteLevel
    post-processor as GPT-2's and Qwen's (kept before the exported BOS/EOS template)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    t.train_from_iterator(CORPUS, BpeTrainer(
        vocab_size=VOCAB - 8, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert t.token_to_id("<s>") == 1 and t.token_to_id("</s>") == 2
    t.save(str(folder / "tokenizer.json"))


def reward_model(tmp_path, family, mean=0.7, std=1.9):
    """A 3-member reward model on a random `family` backbone with statistics (mean, std)
    -> (rm, project tokenizer)."""
    _, folder = build(tmp_path, family, "causal", "policy", vocab_size=VOCAB)
    bpe_tokenizer(folder)
    backbone, tok = load_hf(folder)
    rm = RewardModel(backbone, n_members=3, seed=1).eval()
    with torch.no_grad():
        rm.mean.fill_(mean)
        rm.std.fill_(std)
    return rm, tok


def pad_rows(rows, pad=0):
    """Token lists -> (tokens, mask) (B, T), right-padded."""
    T = max(map(len, rows))
    tokens = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return tokens, mask


def transformers_scores(out, texts, **kw):
    """What a transformers user gets: AutoTokenizer + AutoModelForSequenceClassification,
    one plain call -> (logits (B,), the batch)."""
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = tok(texts, return_tensors="pt", **kw)
    with torch.no_grad():
        return hf(**batch).logits[:, 0], batch


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_transformers_call_gives_the_project_score(tmp_path, family):
    rm, tok = reward_model(tmp_path, family)
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)  # (B,)
    out = save_reward_model(rm, tok, tmp_path / "rm")
    meta = json.loads((out / "reward_model.json").read_text())
    post = json.loads((out / "tokenizer.json").read_text())["post_processor"]
    assert [p["type"] for p in post["processors"]] == ["ByteLevel", "TemplateProcessing"]
    texts = [p + r for p, r in zip(PROMPTS, RESPONSES)]
    logits, batch = transformers_scores(out, texts, padding=True)
    want = [encode_pair_side(tok, p, r, 128)[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert len(set(map(len, want))) == len(want)  # every row padded differently but one
    assert [row[m.bool()].tolist() for row, m in zip(batch["input_ids"],
                                                    batch["attention_mask"])] == want
    assert (batch["attention_mask"][:, 0] == 1).all()  # right padding (GPT-2: absolute pos)
    assert abs(meta["score_offset"]) <= 1e-6  # nothing to add, in every family
    assert (logits - ours).abs().max() <= 1e-5  # the logit is the project's score
    raw = rm(*pad_rows(want)).mean(-1).detach()  # the members' mean, by hand
    assert (meta["mean"], meta["std"]) == pytest.approx((0.7, 1.9))  # kept either way
    if family in FOLDED:  # centred: the constant went into the final LayerNorm's bias
        assert meta["centred"] is True
        assert meta["folded_offset"] == pytest.approx(-0.7 / 1.9)
        assert (ours - (raw - 0.7) / 1.9).abs().max() <= 1e-5
    else:  # RMSNorm: no unit is constant, so the score is scale-only
        assert meta["centred"] is False and "offset_folded_into" not in meta
        assert (ours - raw / 1.9).abs().max() <= 1e-5
    one, _ = transformers_scores(out, texts[1])  # one text, no padding
    assert abs(float(one[0]) - float(ours[1])) <= 1e-5
    rm2, tok2 = load_reward_model(out)  # the project's own reading is unchanged
    assert (score_texts(rm2, tok2, PROMPTS, RESPONSES) - ours).abs().max() <= 1e-6
    assert torch.equal(rm2.head.weight, rm.head.weight) and rm2.centred == (family in FOLDED)
    if family in FOLDED:
        assert torch.equal(rm2.backbone.norm.bias, rm.backbone.norm.bias)
        assert not torch.equal(load_file(str(out / "model.safetensors"))[
            meta["offset_folded_into"]], rm.backbone.norm.bias)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_truncation_in_transformers_is_the_projects(tmp_path, family):
    """The folder's tokenizer truncates on the left to the model's max_len, keeping BOS and
    EOS: `tok(text, truncation=True)` is the project's truncated text."""
    rm, tok = reward_model(tmp_path, family, mean=-0.2, std=0.5)
    rm.max_len = 12
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)
    want = [encode_pair_side(tok, p, r, 12) for p, r in zip(PROMPTS, RESPONSES)]
    assert sum(t for _, t in want) >= 2  # some texts are cut
    out = save_reward_model(rm, tok, tmp_path / "rm")
    texts = [p + r for p, r in zip(PROMPTS, RESPONSES)]
    logits, batch = transformers_scores(out, texts, padding=True, truncation=True)
    assert [row[m.bool()].tolist() for row, m in zip(batch["input_ids"],
                                                    batch["attention_mask"])] == [
        ids for ids, _ in want]
    assert (logits - ours).abs().max() <= 1e-5


def test_set_statistics_picks_the_rule_of_the_family(tmp_path):
    """Statistics over responses whose raw mean scores are known: std and mean are stored in
    both cases; a Llama score averages mean / std over them, a GPT-2 score 0."""
    for family, centred in (("llama", False), ("gpt2", True)):
        rm, tok = reward_model(tmp_path / family, family, mean=0.0, std=1.0)
        rm.centred = not centred  # (set_statistics decides, whatever was there)
        seqs = [encode_pair_side(tok, p, r, 64)[0] for p, r in zip(PROMPTS, RESPONSES)]
        raw = rm(*pad_rows(seqs)).mean(-1).detach()  # (4,)
        mean, std = set_statistics(rm, seqs, tok.pad_id)
        assert mean == pytest.approx(float(raw.mean()), abs=1e-6)
        assert std == pytest.approx(float(raw.std()), abs=1e-6)
        assert rm.centred is centred
        scores = score_texts(rm, tok, PROMPTS, RESPONSES)
        assert float(scores.std()) == pytest.approx(1.0, abs=1e-5)
        assert float(scores.mean()) == pytest.approx(0.0 if centred else mean / std, abs=1e-5)


def test_folder_saved_centred_by_an_earlier_version_keeps_its_score(tmp_path):
    """A Llama folder written before scale-only scores (reward_model.json without `centred`,
    `score_offset` -mean/std) loads with its centred score; transformers' logit + its
    score_offset is that score, as its card said; saved again, it keeps the offset."""
    rm, tok = reward_model(tmp_path, "llama")
    rm.centred = True  # what the earlier version scored
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)
    out = save_reward_model(rm, tok, tmp_path / "old")
    meta = json.loads((out / "reward_model.json").read_text())
    del meta["centred"]
    (out / "reward_model.json").write_text(json.dumps(meta))
    assert meta["score_offset"] == pytest.approx(-0.7 / 1.9)
    rm2, tok2 = load_reward_model(out)
    assert rm2.centred is True
    assert (score_texts(rm2, tok2, PROMPTS, RESPONSES) - ours).abs().max() <= 1e-6
    logits, _ = transformers_scores(out, [p + r for p, r in zip(PROMPTS, RESPONSES)],
                                    padding=True)
    assert (logits + meta["score_offset"] - ours).abs().max() <= 1e-5
    assert (logits - ours).abs().max() > 0.3  # (the offset does matter there)
    again = save_reward_model(rm2, tok2, tmp_path / "again")
    assert json.loads((again / "reward_model.json").read_text())["score_offset"] == (
        pytest.approx(-0.7 / 1.9))
    assert "- 0.368421" in (again / "README.md").read_text()  # the card says what to add


def test_fold_offset_by_hand():
    """s = (3, 4), b = (1, 1), offset 2: b' = b + 2 (3, 4) / 25 = (1.24, 1.32), and
    s . b' = 9 = s . b + 2."""
    b, left = fold_offset(torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 1.0]), 2.0)
    assert torch.allclose(b, torch.tensor([1.24, 1.32]), atol=1e-7)
    assert abs(left) <= 1e-6
    b16, left16 = fold_offset(torch.tensor([[3.0, 4.0]]), torch.ones(2, dtype=torch.bfloat16),
                              2.0)  # bf16 rounds b': what is left is reported, not lost
    assert b16.dtype == torch.bfloat16 and left16 != 0
    assert abs(3 * float(b16[0]) + 4 * float(b16[1]) + left16 - 9.0) <= 1e-6
    zero, left0 = fold_offset(torch.zeros(1, 2), torch.ones(2), 2.0)
    assert torch.equal(zero, torch.ones(2)) and left0 == 2.0


def test_folded_folder_without_the_unfolded_bias_is_refused(tmp_path):
    rm, tok = reward_model(tmp_path, "gpt_neox")
    out = save_reward_model(rm, tok, tmp_path / "rm")
    heads = load_file(str(out / "reward_head.safetensors"))
    save_file({"reward_head.weight": heads["reward_head.weight"]},
              str(out / "reward_head.safetensors"))
    with pytest.raises(ModelConfigError, match="unfolded_norm.bias is missing") as e:
        load_reward_model(out)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- model cards


def test_reward_folder_card_names_base_model_data_and_metrics(tmp_path):
    rm, tok = reward_model(tmp_path, "llama")
    out = save_reward_model(rm, tok, tmp_path / "rm", {
        "trained_steps": 40, "base_model": "HuggingFaceTB/SmolLM2-135M",
        "data": ["runs/feedback.jsonl"], "metrics": {"val_accuracy": 0.8125, "val_pairs": 16}})
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "base_model: HuggingFaceTB/SmolLM2-135M" in card  # a Hub name: in the header too
    assert "**Base model:** `HuggingFaceTB/SmolLM2-135M`" in card
    assert "`runs/feedback.jsonl`" in card
    assert "| val_accuracy | `0.8125` |" in card and "| trained_steps | `40` |" in card
    assert "LlamaForSequenceClassification" in card
    assert "0.368421" in card and "- 0.368421" not in card  # a statistic, nothing to add
    assert "scale-only" in card and "std (scale only)" in card
    bare = save_reward_model(rm, tok, tmp_path / "bare")  # nothing recorded: said so
    text = (bare / "README.md").read_text()
    assert "**Base model:** not recorded" in text and "## Held-out metrics\n\nnot recorded" in text
    set_metrics(bare, {"val_accuracy": 0.75, "val_ece": None})  # measured after saving
    text = (bare / "README.md").read_text()
    assert "| val_accuracy | `0.75` |" in text and "val_ece" not in text
    assert "not recorded\n\n## Usage" not in text and text.count("## Usage") == 1


def test_policy_folder_card_from_the_callers_summary_and_meta(tmp_path):
    _, folder = build(tmp_path, "qwen2", "causal", "init")
    policy, tok = load_hf(folder)
    out = save_model(policy, tok, tmp_path / "dpo", extra_json={"dpo.json": {
        "reference": str(folder), "beta": 0.1, "trained_steps": 7}})
    card = (out / "README.md").read_text()
    assert f"| reference | `{folder}` |" in card  # (the reference need not be the start)
    assert "**Base model:** not recorded" in card
    assert "**Method:** DPO" in card and "| beta | `0.1` |" in card
    out = save_model(policy, tok, tmp_path / "policy", card={
        "base_model": "init", "method": "RLOO policy", "data": "prompts.txt",
        "metrics": {"reward_last": 1.25}})
    card = (out / "README.md").read_text()
    assert "**Method:** RLOO policy" in card and "| reward_last | `1.25` |" in card
    assert "**Base model:** `init`" in card and "base_model:" not in card.split("#")[0]
    assert "Qwen2ForCausalLM" in card and "AutoModelForCausalLM" in card


def test_card_values_stay_on_one_line():
    card = render_card(card_from_meta({"init": "a`b\n# not a heading", "data": "x|y"}, "SFT"))
    assert "\n# not a heading" not in card and "`a'b # not a heading`" in card
    assert card_from_meta({"card": {"method": "mine"}}, "SFT")["method"] == "mine"


def test_encoder_reward_folder_card(tmp_path):
    """An encoder reward model keeps its own format (not *ForSequenceClassification) and gets
    a card: its pooling, how its score is formed, the caller's metrics."""
    from encoder_folders import make_encoder_folder

    from rlhf.lm.encoders.folders import load_encoder

    make_encoder_folder(tmp_path / "enc", "bert")
    enc, tok, _, _ = load_encoder(tmp_path / "enc")
    rm = RewardModel(enc, n_members=2, pooling="cls", tok=tok)
    out = save_reward_model(rm, tok, tmp_path / "rm", {"init": str(tmp_path / "enc"),
                                                       "metrics": {"val_accuracy": 0.5}})
    card = (out / "README.md").read_text()
    assert "# Reward model" in card and "encoder's cls pooling" in card
    assert f"**Base model:** `{tmp_path / 'enc'}`" in card and "| val_accuracy | `0.5` |" in card
    assert "ForSequenceClassification" not in json.loads((out / "config.json").read_text())[
        "architectures"][0]
