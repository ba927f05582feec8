"""`rlhf train-kto`: the KTO loss by hand, the same loss as TRL's `KTOTrainer` on one tiny model
and batch, rows and truncation, a run that logs, saves and resumes exactly, and a bad key."""

import json
import math

import pytest
import torch

from rlhf.cli import main
from rlhf.feedback.derive import UnpairedRow
from rlhf.kto.config import KTOTrainConfig
from rlhf.kto.data import encode_row, encode_rows, mismatched
from rlhf.kto.train import figures, kto_terms
from rlhf.lm.folders import load_model, read_safetensors
from rlhf.preferences.losses import kto_loss

MODEL = "../shared/models/stories260K"


def test_kto_loss_by_hand_both_labels_weights_and_reference_point():
    h = torch.tensor([2.0, -1.0, 0.5, 3.0], requires_grad=True)
    good = torch.tensor([True, False, True, False])
    # z0 = 1: u = 0.5 (h - 1) = [0.5, -1, -0.25, 1]; desirable 2 (1 - s(u)), undesirable 3 s(u)
    kl = torch.tensor(1.0, requires_grad=True)
    loss = kto_loss(h, good, kl, 0.5, desirable_weight=2.0, undesirable_weight=3.0)
    torch.testing.assert_close(loss, torch.tensor([0.755083, 0.806824, 1.124353, 2.193176]))
    loss.sum().backward()
    assert kl.grad is None  # no gradient through the reference point
    # a negative estimate is clamped at 0: u = 0.5 h = [1, -0.5, 0.25, 1.5]
    loss = kto_loss(h, good, torch.tensor(-2.0), 0.5, 2.0, 3.0)
    torch.testing.assert_close(loss, torch.tensor([0.537883, 1.132623, 0.875646, 2.452723]))
    # weights 1 and h = z0: every row 1/2
    torch.testing.assert_close(kto_loss(torch.ones(2), torch.tensor([True, False]),
                                        torch.tensor(1.0), 0.1), torch.full((2,), 0.5))


def test_mismatched_pairs_and_truncation():
    assert mismatched(4) == [3, 0, 1, 2]  # row i gets row i-1's completion (TRL's rotation)
    assert all(i != j for i, j in enumerate(mismatched(2)))

    class Tok:  # one id per word; BOS 1, EOS 2
        bos_id, eos_id = 1, 2

        def encode(self, text, bos=True):
            return [int(w) for w in text.split()]

    assert encode_row(Tok(), "5 6 7", " 8 9", 16) == ([1, 5, 6, 7], [8, 9, 2], False)
    # too long: the prompt's start goes first; BOS and the completion's end stay
    assert encode_row(Tok(), "5 6 7", " 8 9", 5) == ([1, 7], [8, 9, 2], True)
    assert encode_row(Tok(), "5 6 7", " 8 9 10 11", 4) == ([1], [10, 11, 2], True)


def test_figures_reference_point_is_the_mismatched_pairs_mean():
    h = torch.tensor([1.0, -1.0])
    m = figures(h, torch.tensor(0.5), torch.tensor([True, False]), KTOTrainConfig())
    assert math.isclose(float(m["loss"]), float(kto_loss(
        h, torch.tensor([True, False]), torch.tensor(0.5), 0.1).mean()))
    assert float(m["accuracy"]) == 1.0
    assert math.isclose(float(m["reward_desirable"]), 0.1, rel_tol=1e-6)


# ----------------------------------------------------------------------------- TRL reference


def tiny_llama(folder, seed=0):
    """A random tiny transformers Llama and its word-level tokenizer (BOS added), saved."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    V = 64
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, V)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>",
                                               eos_token="</s>", pad_token="<unk>",
                                               unk_token="<unk>")
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return hf, tok


ROWS = [UnpairedRow("w5 w6", " w7 w8", True), UnpairedRow("w9", " w10 w11 w12", False),
        UnpairedRow("w13 w14 w15", " w16", True), UnpairedRow("w17", " w18 w19", False)]


def trl_and_ours(tmp_path, policy_dir, ref_dir):
    """TRL's `KTOTrainer.compute_loss` on ROWS as one batch, its reference point, and ours."""
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    from trl import KTOConfig, KTOTrainer

    hf = transformers.LlamaForCausalLM.from_pretrained(policy_dir)
    ref_hf = transformers.LlamaForCausalLM.from_pretrained(ref_dir).eval()
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(policy_dir)
    args = KTOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4,
                     beta=0.1, desirable_weight=1.3, undesirable_weight=0.7, report_to=[],
                     train_sampling_strategy="sequential", use_cpu=True,
                     bf16=False)  # TRL's default on CPU too; ours (runtime.precision) is fp32
    rows = [{"prompt": r.prompt, "completion": r.completion, "label": r.label} for r in ROWS]
    trainer = KTOTrainer(model=hf, ref_model=ref_hf, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(rows))
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = float(trainer.compute_loss(trainer.model, batch).detach())
    trl_kl = [kl for mode in ("train", "eval") for kl in trainer._metrics[mode]["kl"]][-1]

    cfg = KTOTrainConfig()
    cfg.loss.beta, cfg.loss.desirable_weight, cfg.loss.undesirable_weight = 0.1, 1.3, 0.7
    policy, ours_tok = load_model(policy_dir)
    ref, _ = load_model(ref_dir)
    data = encode_rows(ROWS, ours_tok, 64)
    for i in range(4):  # the same tokens as TRL's batch
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        assert data.context[i] + data.completion[i] == ids
    h, kl, labels = kto_terms(policy.eval(), ref.eval(), data, [0, 1, 2, 3], cfg,
                              torch.device("cpu"))
    return (trl_loss, trl_kl), (float(figures(h, kl, labels, cfg)["loss"].detach()), float(kl))


def test_loss_equals_trl_kto_trainer_on_the_same_tiny_model_and_batch(tmp_path):
    pytest.importorskip("trl", reason="trl (the dev extra) is the reference KTO trainer")
    ref_hf, tok = tiny_llama(tmp_path / "a")
    with torch.no_grad():  # the second model a little away from the first
        for p in ref_hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref_hf.save_pretrained(tmp_path / "b")
    tok.save_pretrained(tmp_path / "b")
    # either model as the policy: the mismatched pairs' mean log-ratio changes sign, so one
    # order has a reference point z0 > 0 and the other an estimate clamped to 0
    clamped = []
    for pol, ref in (("a", "b"), ("b", "a")):
        (trl_loss, trl_kl), (ours, kl) = trl_and_ours(tmp_path, tmp_path / pol, tmp_path / ref)
        assert abs(ours - trl_loss) <= 1e-5, (ours, trl_loss)
        assert abs(max(kl, 0.0) - trl_kl) <= 1e-5, (kl, trl_kl)
        clamped.append(kl < 0)
    assert sorted(clamped) == [False, True]


# ----------------------------------------------------------------------------- end to end


def unpaired_file(path, n=48):
    """A TRL unpaired file: happy endings desirable, sad ones not (imports as thumbs)."""
    with open(path, "w") as f:
        for i in range(n):
            good = i % 2 == 0
            f.write(json.dumps({"prompt": f"Once upon a time, Tom had a dog number {i}.",
                                "completion": " They played and were happy." if good
                                else " The dog ran away and Tom cried.", "label": good}) + "\n")
    return path


def args_for(tmp_path, out, *extra):
    data = unpaired_file(tmp_path / "kto.jsonl")
    return [f"out_dir={out}", f"model.init={MODEL}", f"data.paths=[{data}]", "data.max_len=48",
            "data.val_fraction=0.25", "train.batch_size=8", "train.micro_batch_size=4",
            "train.lr=3e-3", "train.warmup_steps=1", "train.max_steps=6", "train.eval_every=3",
            "train.save_every=2", "progress=false", "runtime.threads=1", *extra]


def steps_of(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
            if "lr" in json.loads(x)]


def test_train_kto_logs_saves_and_resumes_exactly(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train-kto", *args_for(tmp_path, a)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_rows"] + summary["val_rows"] == 48 and summary["steps"] == 6
    rows = steps_of(a)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"kl", "accuracy", "grad_norm", "rows_per_s"} <= set(rows[0]) and "val_loss" in rows[2]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns the labels
    meta = json.loads((a / "policy" / "kto.json").read_text())
    assert meta["loss"] == "kto" and meta["trained_steps"] == 6
    # stopped after step 3 (a checkpoint at 2, then 3), then the same command again
    assert main(["train-kto", *args_for(tmp_path, b, "train.stop_at=3")]) == 0
    assert not (b / "policy").exists()
    assert main(["train-kto", *args_for(tmp_path, b)]) == 0
    pa, pb = read_safetensors(a / "policy"), read_safetensors(b / "policy")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=0)
    rb = steps_of(b)
    assert [r["step"] for r in rb] == list(range(1, 7))
    for x, y in zip(rows, rb):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-6, abs_tol=1e-7)


def test_bad_config_key_names_the_key(tmp_path, capsys):
    assert main(["train-kto", *args_for(tmp_path, tmp_path / "c"), "loss.betta=0.2"]) != 0
    assert "loss.betta" in capsys.readouterr().err
    assert main(["train-kto", *args_for(tmp_path, tmp_path / "d"), "loss.beta=0"]) != 0
    assert "loss.beta" in capsys.readouterr().err
