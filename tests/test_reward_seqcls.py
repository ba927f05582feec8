"""Reward models in and out as transformers `*ForSequenceClassification` folders, with
transformers 5.24 as the reference (random tiny models built in-process, every parameter
perturbed; rlhf/reward/seqcls.py describes the format and the text rules):

- our saved reward folder loads in AutoModelForSequenceClassification with no missing or
  unexpected keys, and its logits equal the project's score (<= 1e-4; `score_offset` 0) on a
  right-padded batch of texts of different lengths, padded by transformers' own tokenizer;
- a folder written by transformers' `save_pretrained` loads as our reward model and our score
  equals transformers' logits (<= 1e-4), padding included, also with pad == EOS (transformers
  then reads before the EOS) and with a chat template;
- refusals (num_labels 2, no score.weight, a score.bias) are one line;
- train-policy and train-reward (the loop's `reward.model.backbone`) take such a folder.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_families import V, word_tokenizer

transformers = pytest.importorskip("transformers")

from rlhf.config import load_config  # noqa: E402
from rlhf.lm.folders import load_hf  # noqa: E402
from rlhf.lm.hf_config import ModelConfigError  # noqa: E402
from rlhf.preferences.tokens import encode_pair_side  # noqa: E402
from rlhf.reward.model import (  # noqa: E402
    RewardModel,
    init_reward_model,
    load_reward_model,
    save_reward_model,
    score_texts,
)
from rlhf.reward.seqcls import ExternalRule  # noqa: E402

LLAMA = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
IDS = dict(bos_token_id=1, eos_token_id=2)
FAMILIES = {  # family: (config class, config, causal class); untied unless said
    "llama": ("LlamaConfig", dict(LLAMA, attention_bias=True), "LlamaForCausalLM"),
    "mistral": ("MistralConfig", dict(LLAMA, sliding_window=4), "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", dict(LLAMA, tie_word_embeddings=True), "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", dict(LLAMA, head_dim=16), "Qwen3ForCausalLM"),
    "gpt2": ("GPT2Config", dict(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=128),
             "GPT2LMHeadModel"),
    "gpt_neox": ("GPTNeoXConfig", dict(vocab_size=V, hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       rotary_pct=0.25, max_position_embeddings=128),
                 "GPTNeoXForCausalLM"),
}
PROMPTS = ["w5 w6 w7", "w9", "w10 w11 w12 w13 w14 w15", "w20 w21"]
RESPONSES = [" w30 w31", " w32 w33 w34 w35 w36 w37 w38", " w40", " w41 w42 w43 w44"]


def build(tmp_path, family, cls, name, seed=0, **over):
    """A random tiny transformers model of `family` (class `cls`: a name or a suffix of the
    family's class), perturbed, saved with a word-level tokenizer -> (model, folder)."""
    cfg_cls, kw, causal = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_cls)(**{**kw, **IDS, **over})
    arch = causal if cls == "causal" else causal.split("For")[0].replace(
        "LMHeadModel", "") + "ForSequenceClassification"
    hf = getattr(transformers, arch)(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    folder = tmp_path / name
    hf.save_pretrained(folder)
    word_tokenizer(folder)
    return hf, folder


def hf_scores(hf, seqs, pad_id):
    """transformers' logits (B,) of a right-padded batch of id lists."""
    T = max(map(len, seqs))
    ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=att).logits[:, 0]


# ----------------------------------------------------------------------------- out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_saved_reward_folder_is_a_transformers_seq_cls_model_with_our_score(tmp_path, family):
    _, folder = build(tmp_path, family, "causal", "policy")
    backbone, tok = load_hf(folder)
    rm = RewardModel(backbone, n_members=3, seed=1).eval()
    with torch.no_grad():
        rm.mean.fill_(0.7)
        rm.std.fill_(1.9)
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)  # (B,)
    out = save_reward_model(rm, tok, tmp_path / "rm")
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, output_loading_info=True)
    assert type(hf).__name__.endswith("ForSequenceClassification")
    assert hf.config.num_labels == 1
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["score_offset"] == pytest.approx(0.0, abs=1e-6)  # GPT-2, GPT-NeoX: folded
    assert meta["centred"] is (family in ("gpt2", "gpt_neox"))  # the others: scale-only
    assert meta["pad_token_id"] == hf.config.pad_token_id != tok.eos_id
    # the text as a transformers user builds it from reward_model.json, padded by the folder's
    # tokenizer (PreTrainedTokenizerFast: AutoTokenizer picks Qwen2's class by model_type,
    # which does not fit this test's word-level vocabulary)
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    assert hf_tok.pad_token_id == hf.config.pad_token_id
    seqs = [[meta["bos_token_id"]] + hf_tok(p + r, add_special_tokens=False).input_ids
            + [meta["eos_token_id"]] for p, r in zip(PROMPTS, RESPONSES)]
    assert seqs == [encode_pair_side(tok, p, r, 128)[0] for p, r in zip(PROMPTS, RESPONSES)]
    batch = hf_tok.pad({"input_ids": seqs}, padding=True, return_tensors="pt")
    assert len(set(map(len, seqs))) == len(seqs) and (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        logits = hf(**batch).logits[:, 0]
    assert (logits + meta["score_offset"] - ours).abs().max() <= 1e-4
    assert ((logits[:, None] - logits) - (ours[:, None] - ours)).abs().max() <= 1e-4
    rm2, tok2 = load_reward_model(out)  # and the project reloads every member
    assert torch.equal(rm2.head.weight, rm.head.weight) and rm2.n_members == 3
    assert (score_texts(rm2, tok2, PROMPTS, RESPONSES) - ours).abs().max() <= 1e-6


def test_score_weight_edited_outside_the_project_is_refused(tmp_path):
    _, folder = build(tmp_path, "llama", "causal", "policy")
    backbone, tok = load_hf(folder)
    out = save_reward_model(RewardModel(backbone, 2), tok, tmp_path / "rm")
    sd = load_file(str(out / "model.safetensors"))
    sd["score.weight"] = sd["score.weight"] * 2
    save_file(sd, str(out / "model.safetensors"))
    with pytest.raises(ModelConfigError, match="score.weight differs") as e:
        load_reward_model(out)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- in


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("pad", ["distinct", "eos"])
def test_transformers_seq_cls_folder_is_our_reward_model(tmp_path, family, pad):
    hf, folder = build(tmp_path, family, "seqcls", "ext", num_labels=1,
                       pad_token_id=0 if pad == "distinct" else 2)
    rm, tok = load_reward_model(folder)
    assert isinstance(tok, ExternalRule) and rm.n_members == 1
    assert float(rm.mean) == 0 and float(rm.std) == 1
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    # TRL's RewardTrainer rule without a chat template: tokenizer(prompt + response) + EOS
    seqs = [hf_tok(p + r).input_ids + [2] for p, r in zip(PROMPTS, RESPONSES)]
    ref = hf_scores(hf, seqs, hf.config.pad_token_id)
    assert (ours - ref).abs().max() <= 1e-4
    if pad == "eos":  # transformers read before the EOS, and so do we
        assert [encode_pair_side(tok, p, r, 128)[0] for p, r in zip(PROMPTS, RESPONSES)] == [
            s[:-1] for s in seqs]


CHAT = ("{% for m in messages %}{{ 'w3 ' if m['role'] == 'user' else 'w4 ' }}"
        "{{ m['content'] }} w8 {% endfor %}{% if add_generation_prompt %}w4 {% endif %}")


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_external_model_with_a_chat_template_reads_the_conversation(tmp_path, family):
    hf, folder = build(tmp_path, family, "seqcls", "ext", num_labels=1, pad_token_id=0)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": CHAT, "tokenizer_class": "PreTrainedTokenizerFast"}))
    rm, tok = load_reward_model(folder)
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    seqs = [hf_tok.apply_chat_template([{"role": "user", "content": p},
                                        {"role": "assistant", "content": r}], tokenize=True,
                                       return_dict=True)["input_ids"]
            for p, r in zip(PROMPTS, RESPONSES)]
    assert seqs[0][:4] == [3, 5, 6, 7] and seqs[0][-1] == 8
    assert (ours - hf_scores(hf, seqs, 0)).abs().max() <= 1e-4


def test_continued_external_model_saves_with_its_text_rule(tmp_path):
    """train-reward / the loop's `reward.model.backbone`: an external model as the start; the
    members start at its head, and the folder it becomes keeps the rule and transformers'
    reading of it."""
    hf, ext = build(tmp_path, "gpt2", "seqcls", "ext", num_labels=1, pad_token_id=2)
    _, policy = build(tmp_path, "gpt2", "causal", "policy", seed=3)
    rm, tok = init_reward_model(str(policy), 3, backbone=str(ext))
    assert rm.n_members == 3 and isinstance(tok, ExternalRule)
    rm.eval()
    assert all(torch.equal(h, rm.head.weight[0]) for h in rm.head.weight)
    ref = score_texts(rm, tok, PROMPTS, RESPONSES)
    seqs = [encode_pair_side(tok, p, r, 128)[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert (ref - hf_scores(hf, seqs, 2)).abs().max() <= 1e-4
    with torch.no_grad():
        rm.std.fill_(2.0)
    out = save_reward_model(rm, tok, tmp_path / "rm")
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["text_rule"] == "external" and meta["pad_token_id"] == 2
    rm2, tok2 = load_reward_model(out)
    assert isinstance(tok2, ExternalRule)
    back = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ours = score_texts(rm2, tok2, PROMPTS, RESPONSES)
    assert (ours - ref / 2).abs().max() <= 1e-5
    full = [s + [2] for s in seqs]  # with the EOS the rule dropped: transformers skips it
    assert (hf_scores(back, full, 2) + meta["score_offset"] - ours).abs().max() <= 1e-4


# ----------------------------------------------------------------------------- refusals


def one_line_refusal(folder, match):
    with pytest.raises(ModelConfigError, match=match) as e:
        load_reward_model(folder)
    assert "\n" not in str(e.value)


def test_refusals_are_one_line(tmp_path):
    _, two = build(tmp_path, "llama", "seqcls", "two", num_labels=2, pad_token_id=0)
    one_line_refusal(two, "num_labels is 2")
    _, missing = build(tmp_path, "qwen2", "seqcls", "missing", num_labels=1, pad_token_id=0)
    sd = load_file(str(missing / "model.safetensors"))
    save_file({k: v for k, v in sd.items() if k != "score.weight"},
              str(missing / "model.safetensors"))
    one_line_refusal(missing, "score.weight")
    _, bias = build(tmp_path, "gpt2", "seqcls", "bias", num_labels=1, pad_token_id=0)
    sd = load_file(str(bias / "model.safetensors"))
    save_file({**sd, "score.bias": torch.zeros(1)}, str(bias / "model.safetensors"))
    one_line_refusal(bias, "score.bias")
    _, extra = build(tmp_path, "llama", "seqcls", "extra", num_labels=1, pad_token_id=0)
    sd = load_file(str(extra / "model.safetensors"))
    save_file({**sd, "model.extra.weight": torch.zeros(2)}, str(extra / "model.safetensors"))
    one_line_refusal(extra, "model.extra.weight")
    (extra / "reward_model.json").write_text("{not json")
    one_line_refusal(extra, "not readable JSON")


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from rlhf.cli import main

    _, two = build(tmp_path, "llama", "seqcls", "two", num_labels=2, pad_token_id=0)
    _, policy = build(tmp_path, "llama", "causal", "policy")
    (tmp_path / "p.txt").write_text("w5 w6\nw7 w8\n")
    capsys.readouterr()  # (transformers' progress bars)
    code = main(["train-policy", f"policy={policy}", "reward.kind=model", f"reward.path={two}",
                 f"out_dir={tmp_path / 'run'}", f"prompts.path={tmp_path / 'p.txt'}",
                 "prompts.batch_prompts=2", "prompts.hold_out_every=0", "runtime.threads=1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "num_labels is 2" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- stages


def test_train_policy_against_a_transformers_reward_model(tmp_path):
    from rlhf.policy.config import PolicyTrainConfig
    from rlhf.policy.train import train

    hf, ext = build(tmp_path, "qwen2", "seqcls", "ext", num_labels=1, pad_token_id=0)
    _, policy = build(tmp_path, "qwen2", "causal", "policy", seed=4)
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    cfg = load_config(PolicyTrainConfig, None, [
        f"policy={policy}", "reward.kind=model", f"reward.path={ext}",
        f"out_dir={tmp_path / 'run'}", f"prompts.path={tmp_path / 'p.txt'}",
        "prompts.batch_prompts=2", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
        "sampling.max_new_tokens=6", "algo.k=2", "steps=3", "sample_every=1", "save_every=0",
        "runtime.threads=1"])
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step_000001.jsonl")
            .read_text().splitlines()]
    rm, tok = load_reward_model(ext)
    again = score_texts(rm, tok, [r["prompt"] for r in rows], [r["response"] for r in rows])
    got = torch.tensor([r["reward"] for r in rows])
    assert len(rows) == 4 and got.std() > 0
    assert (got - again).abs().max() <= 1e-4


def stories_seq_cls(tmp_path, name="ext"):
    """A transformers LlamaForSequenceClassification over the stories260K vocabulary (its
    tokenizer as tokenizer.json), as a user's own reward model for the shared policy."""
    from conftest import STORIES, need_shared

    from rlhf.lm.folders import write_tokenizer
    from rlhf.lm.tokenizer import Llama2cTokenizer

    need_shared()
    torch.manual_seed(5)
    cfg = transformers.LlamaConfig(**{**LLAMA, "vocab_size": 512}, **IDS, num_labels=1,
                                   pad_token_id=0)
    hf = transformers.LlamaForSequenceClassification(cfg).eval()
    hf.save_pretrained(tmp_path / name)
    write_tokenizer(Llama2cTokenizer(STORIES / "tok512.bin"), tmp_path / name)
    return hf, tmp_path / name


def test_train_reward_starts_from_a_transformers_reward_model(tmp_path):
    """`model.backbone` (what the loop passes on as `reward.model.backbone`) names an external
    model: round 1 starts from it, its head in every member; the result is again a
    transformers folder read by the external rule."""
    from test_train_reward import config, make_fixture

    from rlhf.reward.train import train

    _, ext = stories_seq_cls(tmp_path)
    model_dir, store = make_fixture(tmp_path, n=64)
    train(config(model_dir, store, tmp_path / "run", f"model.backbone={ext}",
                 "model.n_members=2", "train.max_steps=3", "train.eval_every=0"))
    out = tmp_path / "run" / "model"
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["text_rule"] == "external" and meta["n_members"] == 2
    rm, tok = load_reward_model(out)
    assert isinstance(tok, ExternalRule)
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, output_loading_info=True)
    assert not any(info.values()), info
    prompts, responses = ["Once upon a time", "The cat"], [" there was a dog.", " sat."]
    seqs = [encode_pair_side(tok, p, r, 64)[0] for p, r in zip(prompts, responses)]
    assert seqs[0][0] == 1 and seqs[0][-1] == 2  # the tokenizer's BOS, the appended EOS
    ours = score_texts(rm, tok, prompts, responses)
    assert (hf_scores(hf.eval(), seqs, 0) + meta["score_offset"] - ours).abs().max() <= 1e-4


def test_loop_round_starts_from_a_transformers_reward_model(tmp_path):
    from test_loop import TINY

    from rlhf.loop.config import LoopConfig
    from rlhf.loop.cycle import run

    _, ext = stories_seq_cls(tmp_path)
    out = tmp_path / "loop"
    summary = run(load_config(LoopConfig, None, [*TINY, f"out_dir={out}",
                                                 f"reward.model.backbone={ext}"]))
    assert summary["rounds"] == 2
    for r in (1, 2):
        meta = json.loads((out / f"round_{r:02d}/reward_model/model/reward_model.json")
                          .read_text())
        assert meta["text_rule"] == "external"


def test_llama2c_reward_model_pads_with_unk_for_transformers(tmp_path):
    """stories260K's tokenizer pads with EOS; the exported folder pads with <unk> (0), so
    transformers reads at the EOS the project reads at."""
    from conftest import STORIES, need_shared

    from rlhf.lm.model import ModelArgs, Transformer
    from rlhf.lm.tokenizer import Llama2cTokenizer

    need_shared()
    torch.manual_seed(0)
    tok = Llama2cTokenizer(STORIES / "tok512.bin")
    rm = RewardModel(Transformer(ModelArgs(dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                                           n_kv_heads=2, vocab_size=512, max_seq_len=64)),
                     n_members=2).eval()
    with torch.no_grad():
        rm.mean.fill_(-0.3)
    prompts, responses = ["Once upon a time", "Tom"], [" there was a big dog.", " ran."]
    ours = score_texts(rm, tok, prompts, responses)
    out = save_reward_model(rm, tok, tmp_path / "rm")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.pad_id == tok.eos_id == 2 and hf.config.pad_token_id == 0
    assert hf_tok.pad_token == "<unk>" and hf_tok.pad_token_id == 0
    seqs = [encode_pair_side(tok, p, r, 64)[0] for p, r in zip(prompts, responses)]
    assert [hf_tok(p + r).input_ids for p, r in zip(prompts, responses)] == seqs  # EOS too
    batch = hf_tok.pad({"input_ids": seqs}, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**batch).logits[:, 0]
    offset = json.loads((out / "reward_model.json").read_text())["score_offset"]
    assert (logits + offset - ours).abs().max() <= 1e-4


def test_reward_folder_of_the_earlier_layout_still_loads(tmp_path):
    """A *ForCausalLM folder with reward_head.weight beside the weights (before this format)."""
    from rlhf.lm.folders import save_model

    _, folder = build(tmp_path, "gpt_neox", "causal", "policy")
    backbone, tok = load_hf(folder)
    rm = RewardModel(backbone, n_members=2, seed=3).eval()
    meta = {"n_members": 2, "mean": 0.5, "std": 2.0, "max_len": 128, "backbone": "causal"}
    save_model(backbone, tok, tmp_path / "old", extra_tensors={"reward_head.weight":
                                                                rm.head.weight},
               extra_json={"reward_model.json": meta})
    rm2, tok2 = load_reward_model(tmp_path / "old")
    with torch.no_grad():
        rm.mean.fill_(0.5)
        rm.std.fill_(2.0)
    assert torch.equal(rm2.head.weight, rm.head.weight)
    assert (score_texts(rm2, tok2, PROMPTS, RESPONSES)
            - score_texts(rm, tok, PROMPTS, RESPONSES)).abs().max() <= 1e-6
