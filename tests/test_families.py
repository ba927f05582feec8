"""The native model families against `transformers`, logit by logit and token by token.

Each case builds a random tiny model with transformers, perturbs every parameter (so biases
and norm weights are not their zero/one initial values), saves it with `save_pretrained`, loads
it with `rlhf.lm.folders.load_hf` and compares: logits (no padding, and left padding against
the unpadded reference) within 1e-4 in fp32, 30 greedy tokens of a left-padded batch equal to
`generate`, and the folder our `save_model` writes loading back in transformers with equal logits.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rlhf.lm.config import SamplingConfig  # noqa: E402
from rlhf.lm.folders import load_hf, save_model  # noqa: E402
from rlhf.lm.generation import generate  # noqa: E402
from rlhf.lm.hf_config import ModelConfigError  # noqa: E402

V = 96
BASE = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CASES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(BASE), None),
    "llama-old-rope-llama3": ("LlamaForCausalLM", "LlamaConfig", dict(BASE), "old-rope"),
    "llama-linear-bias-headdim-tied": ("LlamaForCausalLM", "LlamaConfig", dict(
        BASE, attention_bias=True, mlp_bias=True, head_dim=16, tie_word_embeddings=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0}), None),
    "llama3-rope-parameters": ("LlamaForCausalLM", "LlamaConfig", dict(
        BASE, rope_parameters=LLAMA3), None),
    "mistral-sliding-window": ("MistralForCausalLM", "MistralConfig", dict(
        BASE, sliding_window=4), None),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(BASE, tie_word_embeddings=True), None),
    "qwen2-sliding-all-layers": ("Qwen2ForCausalLM", "Qwen2Config", dict(
        BASE, use_sliding_window=True, sliding_window=4, max_window_layers=0), None),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(BASE, head_dim=16), None),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                                     n_positions=128, bos_token_id=1,
                                                     eos_token_id=2), None),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, rotary_pct=0.25, max_position_embeddings=128), None),
    "gpt_neox-sequential": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, rotary_pct=0.5, use_parallel_residual=False,
        max_position_embeddings=128), None),
}


def word_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(folder / "tokenizer.json"))


def hf_folder(tmp_path, case, seed=0):
    """A random tiny transformers model of `case`, saved; returns (hf model, folder)."""
    arch, cfg_cls, kw, twist = CASES[case]
    torch.manual_seed(seed)
    hf = getattr(transformers, arch)(getattr(transformers, cfg_cls)(**kw)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    folder = tmp_path / case
    hf.save_pretrained(folder)
    if twist == "old-rope":  # a transformers < 5 folder: top-level rope_theta, rope_scaling
        cfg = json.loads((folder / "config.json").read_text())
        del cfg["rope_parameters"]
        cfg["rope_theta"] = 500000.0
        cfg["rope_scaling"] = {k: v for k, v in LLAMA3.items() if k != "rope_theta"}
        (folder / "config.json").write_text(json.dumps(cfg))
        hf = getattr(transformers, arch).from_pretrained(folder).eval()
    word_tokenizer(folder)
    return hf, folder


def hf_logits(hf, x):
    with torch.no_grad():
        return hf(x).logits


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_left_padding(tmp_path, case):
    hf, folder = hf_folder(tmp_path, case)
    ours, _ = load_hf(folder)
    torch.manual_seed(1)
    x = torch.randint(0, V, (2, 24))
    ref = hf_logits(hf, x)
    with torch.no_grad():
        assert (ours(x) - ref).abs().max() <= 1e-4
        pad = 5
        xp = torch.cat([torch.zeros(2, pad, dtype=torch.long), x], 1)
        mask = torch.cat([torch.zeros(2, pad), torch.ones(2, 24)], 1).long()
        assert (ours(xp, mask)[:, pad:] - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_30_greedy_tokens_equal_transformers_generate(tmp_path, case):
    hf, folder = hf_folder(tmp_path, case)
    ours, _ = load_hf(folder)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    gen = generate(ours, prompts, SamplingConfig(greedy=True, max_new_tokens=30), eos_id=-1)
    ids = torch.tensor([prompts[0], [0] * 4 + prompts[1]])
    att = torch.tensor([[1] * 7, [0] * 4 + [1] * 3])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=att, do_sample=False, max_new_tokens=30,
                          min_new_tokens=30, pad_token_id=0, eos_token_id=None)
    assert gen.responses.tolist() == out[:, 7:].tolist()


@pytest.mark.parametrize("case", list(CASES))
def test_saved_folder_loads_in_transformers_with_equal_logits(tmp_path, case):
    hf, folder = hf_folder(tmp_path, case)
    ours, tok = load_hf(folder)
    out = save_model(ours, tok, tmp_path / "saved")
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back) is type(hf)
    x = torch.randint(0, V, (2, 20))
    assert (hf_logits(back, x) - hf_logits(hf, x)).abs().max() <= 1e-5
    again, _ = load_hf(out)
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_ids


# ----------------------------------------------------------------------------- refusals


def edited(tmp_path, case, **changes):
    _, folder = hf_folder(tmp_path, case)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "gemma"}, "model_type 'gemma' is not implemented natively"),
    ({"model_type": "phi3"}, "model_type 'phi3' is not implemented natively"),
    ({"model_type": "olmo2"}, "model_type 'olmo2' is not implemented natively"),
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    ({"num_hidden_layers": 1000000}, "num_hidden_layers: expected an integer in [1, 4096]"),
    ({"num_hidden_layers": 4000}, "the config describes"),
    ({"intermediate_size": 10 ** 6}, "the config describes"),
    ({"num_attention_heads": 0}, "num_attention_heads: expected an integer in"),
    ({"vocab_size": -1}, "vocab_size: expected an integer in"),
    ({"hidden_size": "32"}, "hidden_size: expected an integer in"),
    ({"num_attention_heads": 3, "num_key_value_heads": 3, "head_dim": None},
     "3 does not divide hidden_size"),
    ({"num_key_value_heads": 3}, "num_key_value_heads: 3 does not divide"),
    ({"hidden_act": "gelu"}, "hidden_act: 'gelu' is not implemented natively"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}},
     "rope_type: 'yarn' is not implemented natively"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config: not understood"),
    ({"vocab_size": 95}, "tensor model.embed_tokens.weight has shape [96, 32]"),
])
def test_refused_configs_say_why(tmp_path, changes, message):
    folder = edited(tmp_path, "llama", **changes)
    with pytest.raises(ModelConfigError, match="config.json") as e:
        load_hf(folder)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_special_ids_outside_the_vocabulary_refused(tmp_path):
    folder = edited(tmp_path, "llama", eos_token_id=50256)
    (folder / "generation_config.json").unlink(missing_ok=True)  # it would take precedence
    with pytest.raises(ModelConfigError, match="eos id 50256 is outside the vocabulary"):
        load_hf(folder)


def test_mixed_sliding_layers_refused(tmp_path):
    folder = edited(tmp_path, "qwen2", use_sliding_window=True, sliding_window=4,
                    layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(ModelConfigError, match="layer_types: a mix of sliding and full"):
        load_hf(folder)


def test_every_tensor_used_or_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = hf_folder(tmp_path, "qwen2")
    sd = load_file(str(folder / "model.safetensors"))
    extra = dict(sd, **{"model.layers.0.self_attn.o_proj.bias": torch.zeros(32)})
    save_file(extra, str(folder / "model.safetensors"))
    with pytest.raises(ModelConfigError, match="o_proj.bias is not used"):
        load_hf(folder)
    del sd["model.layers.1.self_attn.k_proj.bias"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ModelConfigError, match="layers.1.self_attn.k_proj.bias is missing"):
        load_hf(folder)


def test_loading_errors_are_one_line_through_the_cli(tmp_path, capsys):
    from rlhf.cli import main

    folder = edited(tmp_path, "llama", model_type="gemma")
    capsys.readouterr()
    code = main(["generate", "--model", str(folder), "--prompt", "w1 w2"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "gemma" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("case", ["mistral-sliding-window", "gpt2"])
def test_transformers_backend_same_interface_same_numbers(tmp_path, case):
    """backend: transformers behind the native interface: padded logits, hidden states and
    cached greedy generation equal the native model's."""
    from rlhf.lm.folders import load_model

    _, folder = hf_folder(tmp_path, case)
    native, _ = load_model(folder)
    wrapped, tok = load_model(folder, "transformers")
    x = torch.randint(0, V, (2, 16))
    mask = torch.ones_like(x)
    mask[1, :4] = 0
    with torch.no_grad():
        assert (wrapped(x, mask)[mask.bool()] - native(x, mask)[mask.bool()]).abs().max() <= 1e-4
        assert wrapped.hidden(x).shape == (2, 16, wrapped.args.dim)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    cfg = SamplingConfig(greedy=True, max_new_tokens=30)
    assert torch.equal(generate(wrapped, prompts, cfg, eos_id=-1).tokens,
                       generate(native, prompts, cfg, eos_id=-1).tokens)


def test_gpt2_base_model_files_without_prefix(tmp_path):
    """Hub GPT-2 checkpoints are GPT2Model files (`h.0.attn.c_attn.weight`, no lm_head)."""
    hf, _ = hf_folder(tmp_path, "gpt2")
    hf.transformer.save_pretrained(tmp_path / "base")
    word_tokenizer(tmp_path / "base")
    ours, _ = load_hf(tmp_path / "base")
    x = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        assert (ours(x) - hf_logits(hf, x)).abs().max() <= 1e-4


@pytest.mark.parametrize("case", ["mistral-sliding-window", "gpt2", "qwen3"])
def test_reward_backbone_packed_pairs_equal_separate_sides(tmp_path, case):
    """As a reward backbone: packed shared-prompt pairs (explicit attention layout, the
    sliding window applied by positions) score as each side alone; a saved reward model
    loads back (the strict loader keeps `reward_head.weight` for the reward code)."""
    from rlhf.preferences.tokens import pack_pairs, pad_right
    from rlhf.reward.model import RewardModel, load_reward_model, save_reward_model

    _, folder = hf_folder(tmp_path, case)
    backbone, tok = load_hf(folder)
    rm = RewardModel(backbone, n_members=2).eval()
    chosen = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 2], [1, 5, 6, 2]]
    rejected = [[1, 5, 6, 7, 8, 30, 31, 32, 33, 34, 35, 2], [1, 5, 40, 41, 42, 43, 2]]
    with torch.no_grad():
        packed = pack_pairs(chosen, rejected, 0)
        both = rm(packed.tokens, packed=packed)  # (2B, E)
        alone = torch.cat([rm(*pad_right(chosen, 0)), rm(*pad_right(rejected, 0))])
        assert (both - alone).abs().max() <= 1e-4
        path = save_reward_model(rm, tok, tmp_path / "rm")
        rm2, _ = load_reward_model(path)
        assert torch.allclose(rm2(*pad_right(chosen, 0)), rm(*pad_right(chosen, 0)), atol=1e-6)


def test_backend_without_transformers_names_the_extra(tmp_path, monkeypatch):
    import sys

    from rlhf.lm.folders import load_model

    _, folder = hf_folder(tmp_path, "qwen2")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ModelConfigError, match=r'pip install "rlhf\[transformers\]"'):
        load_model(folder, "transformers")


def test_rlhf_generate_on_a_native_family_folder(tmp_path, capsys):
    from rlhf.cli import main

    _, folder = hf_folder(tmp_path, "qwen3")
    capsys.readouterr()
    assert main(["generate", "--model", str(folder), "--prompt", "w5 w6 w7", "--greedy",
                 "--max-new-tokens", "5", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert row["new_tokens"] == 5 and row["text"].startswith("w5 w6 w7")


def test_neox_rotary_fraction_giving_no_even_dims_refused(tmp_path):
    folder = edited(tmp_path, "gpt_neox", rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.1})
    with pytest.raises(ModelConfigError, match="rotary_pct: gives 0 rotated dims"):
        load_hf(folder)


def test_truncated_weights_and_missing_tokenizer_are_one_line(tmp_path):
    from rlhf.config import UserError

    _, folder = hf_folder(tmp_path, "llama")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer.json: missing"):
        load_hf(folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelConfigError, match="model.safetensors: not a readable safetensors"):
        load_hf(folder)
