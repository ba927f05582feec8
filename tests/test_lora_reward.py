"""A causal reward model trained with LoRA is saved merged and, beside it, as peft's SEQ_CLS
adapter (rlhf/reward/adapter.py): `PeftModel.from_pretrained` on transformers'
`<Family>ForSequenceClassification` of the base loads it, and its logits equal the merged
folder's transformers logits and the project's scores to 1e-5. Llama is scale-only (the score
head alone); GPT-2 and GPT-NeoX carry the folded offset in their final LayerNorm's bias, saved
whole as a modules_to_save entry. The models are the random tiny families of
tests/test_export_scores.py with adapters whose B is not zero (so the adapters matter)."""

import json

import pytest
import torch
from safetensors import safe_open
from test_export_scores import PROMPTS, RESPONSES, VOCAB, bpe_tokenizer, transformers_scores
from test_reward_seqcls import build

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from rlhf.lm.config import LoraConfig  # noqa: E402
from rlhf.lm.folders import load_hf  # noqa: E402
from rlhf.lm.lora import apply_lora, lora_parameters  # noqa: E402
from rlhf.reward.model import RewardModel, save_reward_model, score_texts  # noqa: E402

TARGETS = {"llama": ["q_proj", "v_proj", "up_proj"], "gpt2": ["c_attn", "c_fc"],
           "gpt_neox": ["query_key_value", "dense_h_to_4h"]}
NORM = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}
TEXTS = [p + r for p, r in zip(PROMPTS, RESPONSES)]


def lora_reward_model(tmp_path, family):
    """A 3-member reward model (mean 0.7, std 1.9) on a random `family` folder, LoRA rank 2
    on TARGETS with B drawn (not zero) -> (rm, tokenizer, base folder)."""
    _, base = build(tmp_path, family, "causal", "policy", vocab_size=VOCAB)
    bpe_tokenizer(base)
    backbone, tok = load_hf(base)
    rm = RewardModel(backbone, n_members=3, seed=1).eval()
    apply_lora(rm.backbone, LoraConfig(rank=2, alpha=8, target_modules=TARGETS[family]))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lora_parameters(rm.backbone):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        rm.mean.fill_(0.7)
        rm.std.fill_(1.9)
    return rm, tok, base


def peft_logits(base, adapter, pad):
    """transformers' class on the base + PeftModel on the adapter folder, the adapter folder's
    tokenizer, one padded call -> (logits (B,), logits with the adapter disabled (B,))."""
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, pad_token_id=pad)
    pm = peft.PeftModel.from_pretrained(hf, adapter).eval()
    tok = transformers.AutoTokenizer.from_pretrained(adapter)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        on = pm(**batch).logits[:, 0]
        with pm.disable_adapter():
            off = pm(**batch).logits[:, 0]
    return on, off


def tensors(path):
    with safe_open(str(path), "pt") as h:
        return {k: h.get_tensor(k) for k in h.keys()}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_seq_cls_adapter_loads_in_peft_with_the_merged_logits(tmp_path, family):
    rm, tok, base = lora_reward_model(tmp_path, family)
    ours = score_texts(rm, tok, PROMPTS, RESPONSES)  # (B,) the project's scores
    out = save_reward_model(rm, tok, tmp_path / "run" / "model", {"base_model": str(base)})
    adapter = tmp_path / "run" / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["task_type"]) == ("LORA", "SEQ_CLS")
    assert cfg["base_model_name_or_path"] == str(base.resolve())
    assert (cfg["r"], cfg["lora_alpha"], cfg["target_modules"]) == (
        2, 8, sorted(TARGETS[family]))
    norm = NORM.get(family)
    assert cfg["modules_to_save"] == ([norm] if norm else []) + ["classifier", "score"]
    saved = tensors(adapter / "adapter_model.safetensors")
    merged = tensors(out / "model.safetensors")
    n_layers = rm.backbone.args.n_layers
    assert sum(".lora_A.weight" in k for k in saved) == len(TARGETS[family]) * n_layers
    whole = {k.removeprefix("base_model.model.") for k in saved if ".lora_" not in k}
    assert whole == {"score.weight"} | ({f"{norm}.weight", f"{norm}.bias"} if norm else set())
    for k in whole:  # the merged folder's tensors, bit for bit
        assert torch.equal(saved["base_model.model." + k], merged[k]), k
    pad = json.loads((out / "config.json").read_text())["pad_token_id"]
    on, off = peft_logits(base, adapter, pad)
    logits, _ = transformers_scores(out, TEXTS, padding=True)
    assert (on - logits).abs().max() <= 1e-5  # = the merged folder's logits
    assert (on - ours).abs().max() <= 1e-5  # = the project's scores (score_offset ~0)
    assert (off - on).abs().min() > 1e-3  # the adapter (and head) matter
    if norm:  # the offset is folded into the saved norm bias, not into the base's
        own = tensors(base / "model.safetensors")[f"{norm}.bias"]
        folded = merged[f"{norm}.bias"]
        assert (folded - own).abs().max() > 1e-4
        meta = json.loads((out / "reward_model.json").read_text())
        s = merged["score.weight"].double().reshape(-1)  # s . (b' - b) = the offset
        assert float(s @ (folded.double() - own.double())) == pytest.approx(
            meta["folded_offset"], abs=1e-5)


def test_without_a_recorded_base_the_base_is_written_beside(tmp_path):
    rm, tok, _ = lora_reward_model(tmp_path, "llama")
    out = save_reward_model(rm, tok, tmp_path / "run" / "model")  # no base_model in meta
    adapter, base = tmp_path / "run" / "adapter", tmp_path / "run" / "base"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base.resolve())
    assert (base / "config.json").is_file()
    pad = json.loads((out / "config.json").read_text())["pad_token_id"]
    on, _ = peft_logits(base, adapter, pad)
    logits, _ = transformers_scores(out, TEXTS, padding=True)
    assert (on - logits).abs().max() <= 1e-5
    readme = (adapter / "README.md").read_text()
    assert f"pad_token_id={pad}" in readme and "SEQ_CLS" in readme


def test_no_lora_no_adapter_folder(tmp_path):
    _, base = build(tmp_path, "llama", "causal", "policy", vocab_size=VOCAB)
    bpe_tokenizer(base)
    backbone, tok = load_hf(base)
    save_reward_model(RewardModel(backbone, n_members=1), tok, tmp_path / "run" / "model",
                      {"base_model": str(base)})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model"]


def test_train_reward_with_lora_writes_the_adapter_peft_scores_with(tmp_path):
    """train-reward with model.lora: adapter/ beside model/, based on model.init, whose peft
    logits equal the merged folder's (stories260K's tokenizer on a tiny random backbone)."""
    from test_train_reward import make_fixture

    from rlhf.config import load_config
    from rlhf.reward.config import RewardTrainConfig
    from rlhf.reward.train import train

    model_dir, store = make_fixture(tmp_path, n=32)
    train(load_config(RewardTrainConfig, None, [
        f"out_dir={tmp_path / 'run'}", f"model.init={model_dir}", f"data.paths=[{store}]",
        "data.max_len=64", "train.batch_size=8", "train.max_steps=2", "train.lr=0.01",
        "progress=false", "model.lora.rank=4", "model.lora.alpha=8",
        "model.lora.target_modules=[all-linear]"]))
    adapter, out = tmp_path / "run" / "adapter", tmp_path / "run" / "model"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(model_dir.resolve())
    pad = json.loads((out / "config.json").read_text())["pad_token_id"]
    on, off = peft_logits(model_dir, adapter, pad)
    logits, _ = transformers_scores(out, TEXTS, padding=True)
    assert (on - logits).abs().max() <= 1e-5
    assert (off - on).abs().min() > 1e-4
