"""LoRA (rlhf.lm.lora): the layer by hand; equal to peft on the same weights (logits and one
training step) for the Llama, GPT-2 and GPT-NeoX families; adapters saved here load in peft
with equal logits, and peft's load here; the merged export; adapters off = the base; every
causal stage trains with LoRA with its base weights unchanged, and one copy of them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from rlhf.config import ConfigError, load_config
from rlhf.lm.config import LoraConfig
from rlhf.lm.folders import load_hf, load_model, save_adapter_folder, save_model
from rlhf.lm.hf_weights import LoraPart
from rlhf.lm.linear import Linear
from rlhf.lm.lora import (
    BaseView,
    LoraLinear,
    Trained,
    adapter_state_dict,
    adapters_off,
    apply_lora,
    has_lora,
    lora_parameters,
    merge_lora,
    with_lora,
)
from tests.conftest import tiny_model

V = 64


# ----------------------------------------------------------------------------- by hand


def test_lora_linear_by_hand():
    """y = x W^T + b + (alpha / r) B A x in the targeted rows only (a fused layer whose rows
    2..3 have no adapter), by hand on a 2 -> 5 layer, r = 1, alpha = 2."""
    base = Linear(2, 5)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1., 0], [0, 1], [1, 1], [2, 0], [0, 3]]))
        base.bias.copy_(torch.tensor([0., 0, 1, 0, 0]))
    parts = [LoraPart("q_proj", "x.q", 0, 2), LoraPart("v_proj", "x.v", 4, 5)]
    layer = LoraLinear(base, parts, rank=1, alpha=2.0, dropout=0.0)
    assert layer.weight is base.weight  # shared, not copied
    x = torch.tensor([[1., 2.]])
    assert torch.equal(layer(x), torch.tensor([[1., 2, 4, 2, 6]]))  # B = 0: the base exactly
    with torch.no_grad():
        layer.lora_A["q_proj"].copy_(torch.tensor([[1., -1.]]))  # A x = -1
        layer.lora_B["q_proj"].copy_(torch.tensor([[3.], [0.5]]))
        layer.lora_A["v_proj"].copy_(torch.tensor([[0., 1.]]))  # A x = 2
        layer.lora_B["v_proj"].copy_(torch.tensor([[0.25]]))
    # scale 2: q rows += 2 * [3, 0.5] * -1 = [-6, -1]; v row += 2 * 0.25 * 2 = 1
    assert torch.allclose(layer(x), torch.tensor([[-5., 1, 4, 2, 7]]))
    with adapters_off(layer):
        assert torch.equal(layer(x), torch.tensor([[1., 2, 4, 2, 6]]))
    assert torch.allclose(layer.delta_weight(), torch.tensor(
        [[6., -6], [1, -1], [0, 0], [0, 0], [0, 0.5]]))


def test_apply_freezes_the_base_and_trains_only_adapters():
    model = apply_lora(tiny_model(), LoraConfig(rank=2, target_modules=["q_proj", "down_proj"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert len(lora_parameters(model)) == 2 * 2 * 2  # (A, B) x (q, down) x 2 layers
    assert set(Trained(model).state_dict()) == {n.replace(".", ":") for n in trainable}
    with pytest.raises(ConfigError, match="lora.target_modules: 'c_attn'"):
        apply_lora(tiny_model(), LoraConfig(rank=2, target_modules=["c_attn"]))


def test_config_rejects_bad_values():
    for key, value, msg in (("rank", -1, "rank"), ("alpha", 0, "alpha"),
                            ("dropout", 1.0, "dropout")):
        with pytest.raises(ConfigError, match=msg):
            load_config(LoraConfig, None, [f"{key}={value}"])


# ----------------------------------------------------------------------------- peft


def word_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(folder / "tokenizer.json"))


FAMILIES = {  # family: (transformers classes and config, targets that cover every layer)
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1,
        eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),  # ours has none
        ["c_attn", "c_proj", "c_fc"]),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5,
        bos_token_id=1, eos_token_id=2), ["query_key_value", "dense", "dense_h_to_4h",
                                          "dense_4h_to_h"]),
}


def hf_base(tmp_path, family, seed=0):
    """A random tiny transformers model of `family`, saved with a tokenizer -> (hf, folder)."""
    transformers = pytest.importorskip("transformers")
    arch, cfg_cls, kw, _ = FAMILIES[family]
    torch.manual_seed(seed)
    hf = getattr(transformers, arch)(getattr(transformers, cfg_cls)(**kw)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    folder = tmp_path / f"base_{family}"
    hf.save_pretrained(folder)
    word_tokenizer(folder)
    return hf, folder


def lora_pair(tmp_path, family, targets=None, rank=4, alpha=8.0):
    """Our model and peft's on the same base, the same random A and B (B nonzero)."""
    peft = pytest.importorskip("peft")
    hf, folder = hf_base(tmp_path, family)
    targets = targets or FAMILIES[family][3]
    ours, _ = load_hf(folder)
    apply_lora(ours, LoraConfig(rank=rank, alpha=alpha, target_modules=targets))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(ours):
            p.copy_(torch.randn_like(p) * 0.2)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=rank, lora_alpha=alpha,
                                                 target_modules=targets, lora_dropout=0.0))
    missing = peft.set_peft_model_state_dict(pm, adapter_state_dict(ours))
    assert not missing.unexpected_keys
    return ours.eval(), pm.eval(), folder


def tokens(seed=2, batch=2, T=12):
    return torch.randint(3, V, (batch, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_and_a_training_step_equal_peft(tmp_path, family):
    """The same adapters give the same logits, the same loss gives the same gradients: after
    one SGD step on both, the adapters are equal (1e-6) and so the logits."""
    peft = pytest.importorskip("peft")
    ours, pm, _ = lora_pair(tmp_path, family)
    x = tokens()
    with torch.no_grad():
        assert (ours(x) - pm(x).logits).abs().max() <= 1e-5
    n_trained = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (ours, pm)]
    assert n_trained[0] == n_trained[1] == sum(p.numel() for p in lora_parameters(ours))
    for model, logits_of in ((ours, lambda m: m(x)), (pm, lambda m: m(x).logits)):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.5)
        logp = torch.log_softmax(logits_of(model)[:, :-1].float(), -1)
        (-logp.gather(-1, x[:, 1:, None]).mean()).backward()
        opt.step()
        model.eval()
    theirs = peft.get_peft_model_state_dict(pm)  # the adapters after the step: equal
    for key, t in adapter_state_dict(ours).items():
        assert (t - theirs[key]).abs().max() <= 1e-6, key
    with torch.no_grad():  # (the step scales rounding by lr: 5e-5 rather than 1e-5)
        after = ours(x)
        assert (after - pm(x).logits).abs().max() <= 5e-5
        with adapters_off(ours):
            assert (after - ours(x)).abs().max() > 1e-3  # the step did change the adapters


def test_qv_only_leaves_k_rows_alone(tmp_path):
    """peft's default targets (q_proj, v_proj): our fused q/k/v gets zero update in k's rows."""
    ours, pm, _ = lora_pair(tmp_path, "llama", targets=["q_proj", "v_proj"])
    x = tokens()
    with torch.no_grad():
        assert (ours(x) - pm(x).logits).abs().max() <= 1e-5
    layer = ours.layers[0].attention.wqkv
    dw = layer.delta_weight()
    assert dw[32:48].abs().max() == 0 and dw[:32].abs().max() > 0 and dw[48:].abs().max() > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapter_saved_here_loads_in_peft(tmp_path, family):
    """save_adapter_folder -> PeftModel.from_pretrained(AutoModelForCausalLM, folder): logits
    equal to 1e-5; base_model_name_or_path names the base folder; and it loads here too."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    ours, _, base = lora_pair(tmp_path, family)
    tok = load_hf(base)[1]
    save_adapter_folder(ours, tok, tmp_path / "run" / "adapter", str(base))
    ad = tmp_path / "run" / "adapter"
    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base.resolve()) and cfg["r"] == 4
    hf = transformers.AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    pm = peft.PeftModel.from_pretrained(hf, ad).eval()
    x = tokens(seed=3)
    with torch.no_grad():
        expected = ours(x)
        assert (pm(x).logits - expected).abs().max() <= 1e-5
        again, _ = load_model(ad)  # an adapter folder wherever a model folder is accepted
        assert has_lora(again) and (again(x) - expected).abs().max() <= 1e-6


def test_peft_adapter_loads_here_with_a_relative_base(tmp_path, monkeypatch):
    """An adapter peft saved (base named relative to the working directory) as model.init."""
    peft = pytest.importorskip("peft")
    _, pm, base = lora_pair(tmp_path, "llama", targets=["q_proj", "up_proj", "o_proj"])
    pm.save_pretrained(tmp_path / "peft_adapter")
    cfg_file = tmp_path / "peft_adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = base.name  # relative to tmp_path
    cfg_file.write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    ours, _ = load_model("peft_adapter")
    x = tokens(seed=4)
    with torch.no_grad():
        assert (ours(x) - pm(x).logits).abs().max() <= 1e-5
    cfg["use_dora"] = True
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="use_dora"):
        load_model("peft_adapter")
    assert peft  # (imported for the skip)


def test_merged_export_equals_the_adapter_model_and_adapters_off_the_base(tmp_path):
    ours, _, base = lora_pair(tmp_path, "llama")
    tok = load_hf(base)[1]
    x = tokens(seed=5)
    save_model(ours, tok, tmp_path / "merged")
    merged, _ = load_model(tmp_path / "merged")
    plain, _ = load_hf(base)
    with torch.no_grad():
        assert not has_lora(merged)
        assert (merged(x) - ours(x)).abs().max() <= 1e-5
        with adapters_off(ours):
            assert torch.equal(ours(x), plain(x))  # the reference is the base, exactly
        assert torch.equal(BaseView(ours)(x), plain(x))
        assert (ours(x) - plain(x)).abs().max() > 1e-3
        expected = ours(x)
        merge_lora(ours)  # in place: plain layers, the same result
        assert not has_lora(ours) and isinstance(ours.layers[0].attention.wqkv, Linear)
        assert (ours(x) - expected).abs().max() <= 1e-5


def test_with_lora_rules(tmp_path):
    model = tiny_model()
    n_params = sum(p.numel() for p in model.parameters())
    assert with_lora(model, LoraConfig(rank=0)) is model and not has_lora(model)
    with_lora(model, LoraConfig(rank=2, dropout=0.1))
    assert has_lora(model) and model.layers[0].attention.wqkv.dropout.p == 0.1
    with_lora(model, LoraConfig(rank=8, dropout=0.0))  # kept (an adapter folder's rank)
    assert model.layers[0].attention.wqkv.rank == 2
    with_lora(model, LoraConfig(rank=0))  # merged away: full fine-tuning
    assert not has_lora(model) and all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_base_view_shares_weights_and_leaves_the_policy_alone():
    policy = apply_lora(tiny_model(), LoraConfig(rank=2))
    ref = BaseView(policy)
    ref.eval().requires_grad_(False)
    assert list(ref.parameters()) == []
    assert all(p.requires_grad for p in lora_parameters(policy))
    assert math.isfinite(float(ref(tokens(T=6)).sum()))
    assert isinstance(ref, nn.Module)


# ----------------------------------------------------------------------------- the stages


LORA = ["model.lora.rank=4", "model.lora.alpha=8", "model.lora.target_modules=[all-linear]"]


@pytest.fixture
def stage_setup(tmp_path):
    """A tiny causal backbone folder (stories260K's tokenizer), a comparison store, SFT rows,
    KTO rows and prompts; returns (folder, paths)."""
    from test_train_reward import make_fixture

    model_dir, store = make_fixture(tmp_path, n=64)
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"the cat {w}", "completion": f" ran {w}"})
                           + "\n" for w in "dog sun tree big red blue sat ran".split()))
    kto = tmp_path / "kto.jsonl"
    kto.write_text("".join(json.dumps({"prompt": f"the {w}", "completion": f" sat {w}",
                                       "label": i % 2 == 0}) + "\n"
                           for i, w in enumerate("dog sun tree big red blue sat ran".split())))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\nthe dog\nthe sun\nthe tree\n")
    return model_dir, {"store": store, "sft": sft, "kto": kto, "prompts": prompts}


def base_unchanged_and_state_adapters_only(model_dir, trained, out):
    """The trained model's base weights equal the folder's; the saved state holds only what
    trains (adapters, heads); the adapter folder loads with equal logits."""
    base, _ = load_model(model_dir)
    sd = trained.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(sd[k], v), k  # frozen: bit for bit
    assert any(p.abs().max() > 0 for n, p in trained.named_parameters() if "lora_B" in n)
    from safetensors import safe_open

    with safe_open(str(out / "state" / "tensors.safetensors"), "pt") as h:
        weights = [k for k in h.keys() if k.startswith("module.")]
    assert weights and all("lora_" in k or "head" in k for k in weights), weights[:5]


def count_loads(monkeypatch, module):
    """Count the model folders `module` loads (load_model calls)."""
    calls = []
    real = module.load_model

    def counted(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)
    monkeypatch.setattr(module, "load_model", counted)
    return calls


def test_sft_with_lora(stage_setup, tmp_path):
    from rlhf.harness.run import Handover
    from rlhf.sft.config import SFTConfig
    from rlhf.sft.train import train

    model_dir, paths = stage_setup
    hand = Handover()
    cfg = load_config(SFTConfig, None, [
        f"out_dir={tmp_path / 'sft_run'}", f"model.init={model_dir}",
        f"data.paths=[{paths['sft']}]", "train.batch_size=4", "train.max_steps=3",
        "train.lr=0.01", "data.val_fraction=0", "progress=false", *LORA])
    s = train(cfg, hand)
    trained = hand.trained[0]
    base_unchanged_and_state_adapters_only(model_dir, trained, tmp_path / "sft_run")
    ad, _ = load_model(s["adapter"])
    merged, _ = load_model(s["policy"])
    x = torch.randint(3, 500, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ad(x) - trained.eval()(x)).abs().max() <= 1e-6
        assert (merged(x) - trained(x)).abs().max() <= 1e-5


def test_dpo_with_lora_reference_is_the_base(stage_setup, tmp_path, monkeypatch):
    import rlhf.dpo.train as dpo_train
    from rlhf.dpo.config import DPOTrainConfig
    from rlhf.harness.run import Handover

    model_dir, paths = stage_setup
    loads = count_loads(monkeypatch, dpo_train)
    hand = Handover()
    cfg = load_config(DPOTrainConfig, None, [
        f"out_dir={tmp_path / 'dpo_run'}", f"model.init={model_dir}",
        f"data.paths=[{paths['store']}]", "data.max_len=64", "train.batch_size=8",
        "train.max_steps=3", "train.lr=0.01", "progress=false", *LORA])
    s = dpo_train.train(cfg, hand)
    assert loads == [str(model_dir)]  # the reference pass ran on the policy's base
    base_unchanged_and_state_adapters_only(model_dir, hand.trained[0], tmp_path / "dpo_run")
    from rlhf.dpo.pairs import logprobs_of_pairs, reference_logprobs
    from rlhf.preferences.data import prepare_data

    base, tok = load_model(model_dir)  # the cached reference = a separately loaded base
    train_d, val_d = prepare_data(cfg, tok)
    cached = reference_logprobs(None, {"train": train_d, "val": val_d}, tmp_path / "dpo_run",
                                str(model_dir), 64, "cpu")
    c, r = logprobs_of_pairs(base, train_d, "cpu")
    assert (cached["train.chosen"] - c).abs().max() <= 1e-5
    assert (cached["train.rejected"] - r).abs().max() <= 1e-5
    meta = json.loads((tmp_path / "dpo_run/adapter/dpo.json").read_text())
    assert meta["reference"] == str(model_dir.resolve()) and s["adapter"].endswith("adapter")


def test_kto_with_lora_holds_one_copy(stage_setup, tmp_path, monkeypatch):
    import rlhf.kto.train as kto_train
    from rlhf.harness.run import Handover
    from rlhf.kto.config import KTOTrainConfig

    model_dir, paths = stage_setup
    loads = count_loads(monkeypatch, kto_train)
    hand = Handover()
    cfg = load_config(KTOTrainConfig, None, [
        f"out_dir={tmp_path / 'kto_run'}", f"model.init={model_dir}",
        f"data.paths=[{paths['kto']}]", "train.batch_size=4", "train.eval_batch_size=2",
        "train.max_steps=3", "train.lr=0.01", "progress=false", *LORA])
    s = kto_train.train(cfg, hand)
    assert loads == [str(model_dir)]  # no second copy for the reference
    base_unchanged_and_state_adapters_only(model_dir, hand.trained[0], tmp_path / "kto_run")
    assert (tmp_path / "kto_run/adapter/adapter_model.safetensors").is_file() and s["adapter"]


def test_policy_with_lora_reference_shares_the_base(stage_setup, tmp_path, monkeypatch):
    import rlhf.policy.run as policy_run
    from rlhf.harness.run import Handover
    from rlhf.policy.config import PolicyTrainConfig
    from rlhf.policy.train import train

    model_dir, paths = stage_setup
    loads = count_loads(monkeypatch, policy_run)
    seen = {}
    real_set_up = policy_run.set_up

    def set_up(*a, **kw):  # look at the reference the stage holds
        run = real_set_up(*a, **kw)
        seen["ref"], seen["policy"] = run.ref, run.policy
        return run
    monkeypatch.setattr("rlhf.policy.train.set_up", set_up)
    hand = Handover()
    cfg = load_config(PolicyTrainConfig, None, [
        f"policy={model_dir}", f"out_dir={tmp_path / 'pol_run'}",
        f"prompts.path={paths['prompts']}",
        "prompts.batch_prompts=2", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
        "sampling.max_new_tokens=6", "algo.k=2", "algo.lr=0.05", "steps=3", "sample_every=0",
        "save_every=0", "progress=false", "guard.stop=false", *LORA])
    s = train(cfg, score_fn=lambda gen, _: (gen.responses % 2 == 0).float().mean(1), hand=hand)
    assert loads == [str(model_dir)]
    ref, policy = seen["ref"], seen["policy"]
    assert isinstance(ref, BaseView) and ref.model is policy and not list(ref.parameters())
    ptrs = {p.data_ptr() for p in policy.parameters()}
    assert all(p.data_ptr() in ptrs for p in ref.model.parameters())  # one copy of the base
    base_unchanged_and_state_adapters_only(model_dir, hand.trained[0], tmp_path / "pol_run")
    assert (tmp_path / "pol_run/adapter/adapter_config.json").is_file() and s["adapter"]


def test_reward_with_lora_trains_adapters_and_heads(stage_setup, tmp_path):
    from rlhf.harness.run import Handover
    from rlhf.reward.config import RewardTrainConfig
    from rlhf.reward.model import load_reward_model
    from rlhf.reward.train import train

    model_dir, paths = stage_setup
    hand = Handover()
    cfg = load_config(RewardTrainConfig, None, [
        f"out_dir={tmp_path / 'rm_run'}", f"model.init={model_dir}",
        f"data.paths=[{paths['store']}]", "data.max_len=64", "train.batch_size=8",
        "train.max_steps=3", "train.lr=0.01", "progress=false", "model.n_members=2", *LORA])
    train(cfg, hand)
    rm = hand.trained[0]
    base_unchanged_and_state_adapters_only(model_dir, rm.backbone, tmp_path / "rm_run")
    saved, _ = load_reward_model(tmp_path / "rm_run/model")  # merged: scores as trained
    x = torch.randint(3, 500, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (saved(x) - rm.eval()(x)).abs().max() <= 1e-4
    with pytest.raises(ConfigError, match="model.lora.rank"):
        train(load_config(RewardTrainConfig, None, [
            f"out_dir={tmp_path / 'rm2'}", f"model.init={model_dir}",
            f"data.paths=[{paths['store']}]", "data.max_len=64", "train.batch_size=8",
            "train.max_steps=1", "progress=false", "model.train_backbone=false", *LORA]))


def test_adapter_of_a_llama2c_base_writes_the_base_beside(tmp_path):
    """stories260K is a llama2.c checkpoint transformers cannot read: the adapter folder's
    base_model_name_or_path is a converted base/ beside it, and peft loads the pair."""
    from tests.conftest import STORIES, need_shared

    need_shared()
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    model, tok = load_model(STORIES)
    apply_lora(model, LoraConfig(rank=2, target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn_like(p) * 0.1)
    save_adapter_folder(model, tok, tmp_path / "run" / "adapter", str(STORIES))
    base = json.loads((tmp_path / "run/adapter/adapter_config.json").read_text())
    assert base["base_model_name_or_path"] == str((tmp_path / "run" / "base").resolve())
    pm = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(
        base["base_model_name_or_path"]), tmp_path / "run" / "adapter").eval()
    x = torch.tensor([tok.encode("Once upon a time there was a cat")])
    with torch.no_grad():  # (stories260K's logits reach ~20: float32 sums differ by ~1e-5)
        assert (pm(x).logits - model.eval()(x)).abs().max() <= 5e-5
        with adapters_off(model), pm.disable_adapter():  # the base/ folder is the base
            assert (pm(x).logits - model(x)).abs().max() <= 5e-5


def test_a_lora_run_resumes_from_its_adapter_state(stage_setup, tmp_path, capfd):
    """SFT stopped after step 2 and resumed (the state holds only the adapters and their
    moments) ends with the adapters of a run straight through."""
    from rlhf.harness.run import Handover
    from rlhf.sft.config import SFTConfig
    from rlhf.sft.train import train

    model_dir, paths = stage_setup

    def run(out, *extra):
        hand = Handover()
        s = train(load_config(SFTConfig, None, [
            f"out_dir={out}", f"model.init={model_dir}", f"data.paths=[{paths['sft']}]",
            "train.batch_size=4", "train.max_steps=4", "train.lr=0.01", "data.val_fraction=0",
            "progress=false", *LORA, *extra]), hand)
        return s, hand.trained
    straight = run(tmp_path / "a")[1]
    assert run(tmp_path / "b", "train.stop_at=2")[0]["stopped_at"] == 2
    capfd.readouterr()
    resumed = run(tmp_path / "b")[1]
    assert "(step 2)" in capfd.readouterr().err  # resumed, not restarted
    a, b = adapter_state_dict(straight[0]), adapter_state_dict(resumed[0])
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
