"""`rlhf train-policy` for 5 steps on a tiny model of every native family, and on one family
(Gemma, refused natively) through the transformers backend: the run ends, the saved policy
differs from the start and loads back (natively, or in transformers) with the same logits."""

import json

import pytest
import torch
from test_families import V, hf_folder

transformers = pytest.importorskip("transformers")

from rlhf.config import load_config  # noqa: E402
from rlhf.lm.folders import load_model  # noqa: E402
from rlhf.policy.config import PolicyTrainConfig  # noqa: E402
from rlhf.policy.train import train  # noqa: E402

FAMILIES = ["llama-linear-bias-headdim-tied", "mistral-sliding-window", "qwen2", "qwen3",
            "gpt2", "gpt_neox"]


def even_token_share(gen, texts):
    even = (gen.responses % 2 == 0).float() * gen.response_mask
    return even.sum(1) / gen.response_mask.sum(1)


def run(folder, tmp_path, *over):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(" ".join(f"w{(i * 7 + j) % V}" for j in range(1 + i % 4))
                                 for i in range(8)) + "\n")
    cfg = load_config(PolicyTrainConfig, None, [
        f"policy={folder}", f"out_dir={tmp_path / 'run'}", f"prompts.path={prompts}",
        "prompts.batch_prompts=4", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
        "sampling.max_new_tokens=8", "algo.k=2", "algo.lr=0.01", "kl.coef=0.01",
        "sample_every=0", "save_every=0", "runtime.threads=1", "steps=5", *over])
    train(cfg, score_fn=even_token_share)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
            if x.strip()]
    return tmp_path / "run" / "policy", rows


@pytest.mark.slow
@pytest.mark.parametrize("case", FAMILIES)
def test_train_policy_5_steps_native(tmp_path, case):
    _, folder = hf_folder(tmp_path, case)
    start, _ = load_model(folder)
    out, rows = run(folder, tmp_path)
    assert len([r for r in rows if "step" in r]) >= 5
    trained, _ = load_model(out)
    x = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        assert (trained(x) - start(x)).abs().max() > 1e-4  # it learned something
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        assert (back(x).logits - trained(x)).abs().max() <= 1e-4


GEMMA = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             max_position_embeddings=128)


@pytest.mark.slow
def test_train_policy_through_the_transformers_backend(tmp_path):
    from test_families import word_tokenizer

    from rlhf.lm.hf_config import ModelConfigError

    torch.manual_seed(0)
    hf = transformers.GemmaForCausalLM(transformers.GemmaConfig(**GEMMA)).eval()
    folder = tmp_path / "gemma"
    hf.save_pretrained(folder)
    word_tokenizer(folder)
    with pytest.raises(ModelConfigError, match="backend: transformers"):
        load_model(folder)
    out, rows = run(folder, tmp_path, "backend=transformers")
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        assert (back(x).logits - hf(x).logits).abs().max() > 1e-4
        ours, _ = load_model(out, "transformers")
        assert (ours(x) - back(x).logits).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
@pytest.mark.parametrize("case", FAMILIES)
def test_train_policy_fsdp_two_processes(tmp_path, case, parallel):
    """runtime.parallel=fsdp (blocks sharded) or ddp on 2 processes, every native family: the
    (gathered) saved policy has every tensor of the start in its shape, and loads back in
    transformers."""
    from safetensors.torch import load_file
    from test_train_policy import run_policy

    _, folder = hf_folder(tmp_path, case)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"w{i} w{i + 1}" for i in range(1, 9)) + "\n")
    run_policy([f"policy={folder}", f"out_dir={tmp_path / 'fsdp'}", f"prompts.path={prompts}",
                "prompts.batch_prompts=4", "prompts.hold_out_every=0", "prompts.eval_prompts=0",
                "sampling.max_new_tokens=8", "algo.k=2", "runtime.device=cpu",
                "reward.scorer=length", "steps=2", f"runtime.parallel={parallel}"], processes=2)
    saved = load_file(str(tmp_path / "fsdp" / "policy" / "model.safetensors"))
    start = load_file(str(folder / "model.safetensors"))
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in start.items()}
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "policy")


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_transformers_backend_under_torchrun(tmp_path, parallel):
    """The transformers backend (Gemma, refused natively) on 2 processes: DDP replicas or FSDP
    shards (its decoder layers sit in a ModuleList, as the native blocks do); the saved policy
    loads in transformers and differs from the start."""
    from test_families import word_tokenizer
    from test_train_policy import run_policy

    torch.manual_seed(0)
    hf = transformers.GemmaForCausalLM(transformers.GemmaConfig(**GEMMA)).eval()
    folder = tmp_path / "gemma"
    hf.save_pretrained(folder)
    word_tokenizer(folder)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"w{i} w{i + 1}" for i in range(1, 9)) + "\n")
    out = tmp_path / parallel
    run_policy([f"policy={folder}", f"out_dir={out}", f"prompts.path={prompts}",
                "backend=transformers", "prompts.batch_prompts=4", "prompts.hold_out_every=0",
                "prompts.eval_prompts=0", "sampling.max_new_tokens=8", "algo.k=2",
                "algo.lr=0.01", "runtime.device=cpu", "reward.scorer=length", "steps=2",
                f"runtime.parallel={parallel}"], processes=2)
    back = transformers.AutoModelForCausalLM.from_pretrained(out / "policy").eval()
    x = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        assert (back(x).logits - hf(x).logits).abs().max() > 1e-4
