"""Config keys that transformers' class for a family does not read are accepted as transformers
accepts them (rlhf/lm/hf_config.py `IGNORED`, `NEUTRAL`): the folder loads natively with
logits equal to transformers' own model loaded from the same folder (<= 1e-4), and keys
that would change the computation are still refused.

Each case takes a random tiny transformers model (tests/test_families.py `hf_folder`), adds
the keys to its config.json, and loads the folder both ways.
"""

import json

import pytest
import torch
from test_families import V, edited, hf_folder

transformers = pytest.importorskip("transformers")

from rlhf.lm.folders import load_hf  # noqa: E402
from rlhf.lm.hf_config import ModelConfigError  # noqa: E402

# what transformers 4.x wrote into every config.json it saved (generation defaults, old
# bookkeeping): transformers 5 pops or ignores them
OLD_KEYS = {"max_length": 20, "min_length": 0, "do_sample": False, "num_beams": 1,
            "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0,
            "bad_words_ids": None, "no_repeat_ngram_size": 0, "_num_labels": 1,
            "gradient_checkpointing": False, "output_past": True, "tf_legacy_loss": False,
            "_commit_hash": None}


@pytest.mark.parametrize("case, keys", [
    # GPT-NeoX attends with every head: transformers ignores num_key_value_heads there
    ("gpt_neox", {"num_key_value_heads": 2}),
    ("gpt_neox-sequential", {"num_key_value_heads": 4, **OLD_KEYS}),
    ("gpt2", {"num_key_value_heads": 2, **OLD_KEYS}),
    ("llama", OLD_KEYS),
    ("llama", {"sliding_window": 3}),  # Llama attends to the whole context whatever it says
    ("mistral-sliding-window", {"attention_bias": True, "mlp_bias": True}),  # no biases
    ("qwen2", {"attention_bias": True, "mlp_bias": True}),  # q/k/v biases, always, no others
    ("qwen3", {"mlp_bias": True}),
])
def test_keys_transformers_ignores_load_with_its_logits(tmp_path, case, keys):
    folder = edited(tmp_path, case, **keys)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ours, _ = load_hf(folder)
    torch.manual_seed(2)
    x = torch.randint(0, V, (2, 12))  # longer than the sliding windows (3, 4)
    with torch.no_grad():
        ref = hf(x).logits
        assert (ours(x) - ref).abs().max() <= 1e-4
    assert ref.abs().max() > 0.1  # (a real comparison: the logits are not all ~0)


def test_neox_num_key_value_heads_changes_nothing(tmp_path):
    """Whatever num_key_value_heads says (here 1, a GQA shape transformers never builds for
    GPT-NeoX), every head has its own keys and values: the same logits as without it."""
    _, folder = hf_folder(tmp_path, "gpt_neox")
    plain, _ = load_hf(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 1}))
    ours, _ = load_hf(folder)
    assert ours.args.n_kv_heads == ours.args.n_heads == 4
    x = torch.randint(0, V, (1, 10))
    with torch.no_grad():
        assert torch.equal(ours(x), plain(x))


@pytest.mark.parametrize("case, keys, message", [
    ("gpt_neox", {"quantization_config": {"quant_method": "gptq"}},
     "quantization_config: not understood"),
    ("gpt2", {"auto_map": {"AutoModel": "x.Y"}}, "auto_map: not understood"),  # custom code
    ("llama", {"num_key_value_heads": 3}, "num_key_value_heads: 3 does not divide"),
])
def test_keys_that_change_the_computation_are_still_refused(tmp_path, case, keys, message):
    folder = edited(tmp_path, case, **keys)
    with pytest.raises(ModelConfigError, match="config.json") as e:
        load_hf(folder)
    assert message in str(e.value) and "\n" not in str(e.value)
