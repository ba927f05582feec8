"""`rlhf train-sft`: the masked loss by hand, rows from every source, packing that changes no
row's loss, the reference test against TRL's SFTTrainer (standard and conversational rows,
completion-only masking, TRL's own packing), and end-to-end runs (the loss falls, metrics and
checkpoints, exact resume, accumulation, a bad key named)."""

import json
import math

import pytest
import torch
from conftest import STORIES, need_shared, tiny_model

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.feedback.records import Comparison, Correction
from rlhf.feedback.store import ComparisonStore
from rlhf.lm.folders import load_hf, read_safetensors
from rlhf.sft.config import SFTConfig
from rlhf.sft.data import (
    SFTData,
    SFTRow,
    encode_row,
    encode_rows,
    layout,
    pack_bins,
    pack_width,
    read_rows,
)
from rlhf.sft.losses import sft_loss, token_hits, token_nll


def test_masked_loss_by_hand():
    # V = 2, tokens [0, 1, 0]: position 0 gives p(1) = 3/4, position 1 gives p(0) = 4/5
    logits = torch.tensor([[[0.0, math.log(3)], [math.log(4), 0.0], [5.0, -5.0]]])
    tokens = torch.tensor([[0, 1, 0]])
    only_first = torch.tensor([[1, 1, 0]])  # token 0 is never a target; token 2 masked out
    assert float(sft_loss(logits, tokens, only_first)) == pytest.approx(-math.log(0.75))
    both = torch.tensor([[0, 1, 1]])
    expected = (-math.log(0.75) - math.log(0.8)) / 2
    assert float(sft_loss(logits, tokens, both)) == pytest.approx(expected)
    assert float(sft_loss(logits, tokens, both, 4)) == pytest.approx(expected * 2 / 4)
    assert float(sft_loss(logits, tokens, torch.zeros(1, 3))) == 0.0  # no target: 0, not nan
    assert float(token_hits(logits, tokens, both)) == 2.0  # argmax 1 then 0: both right


def test_pack_bins_first_fit_decreasing():
    assert pack_bins([5, 3, 4, 2], 7) == [[0, 3], [2, 1]]
    assert pack_bins([9, 1], 7) == [[0], [1]]  # too long: alone


def test_pack_width_packs_only_where_it_saves_a_quarter():
    # bins [5, 2] and [4, 3]: 2 x 7 = 14 positions vs 4 x 5 = 20 padded (14 <= 15): packed
    assert pack_width([5, 3, 4, 2], 7) == 7
    # bins [6, 1] and [6]: 2 x 7 = 14 vs 3 x 6 = 18 (14 > 13.5): padded
    assert pack_width([6, 6, 1], 7) == 0
    assert pack_width([6, 6, 6], 7) == 0  # nothing fits together


def test_packing_changes_no_rows_loss():
    model = tiny_model(vocab_size=64, max_seq_len=64)
    g = torch.Generator().manual_seed(0)
    lengths = [5, 9, 3, 12, 7, 2, 6]
    ids = [torch.randint(3, 64, (n,), generator=g).tolist() for n in lengths]
    masks = [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths]
    data = SFTData(ids, masks)
    idx = list(range(len(ids)))
    with torch.no_grad():
        alone = []
        for i in idx:
            b = layout(data, [i], 0)
            alone.append(float((token_nll(model(b.tokens, **b.inputs()), b.tokens)
                                * b.labels_mask[:, 1:]).sum()))
        b = layout(data, idx, 0, pack_to=16)
        assert b.tokens.shape[0] < len(ids)  # rows really share sequences
        nll = token_nll(model(b.tokens, **b.inputs()), b.tokens) * b.labels_mask[:, 1:]
    packed = []
    for r, bin_ in enumerate(pack_bins(lengths, 16)):
        at = 0
        for i in bin_:  # row i's targets are columns at .. at + n - 2 of the shifted nll
            packed.append((i, float(nll[r, at:at + lengths[i] - 1].sum())))
            at += lengths[i]
    for i, v in packed:
        assert v == pytest.approx(alone[i], abs=1e-5), i
    padded = layout(data, idx, 0)
    with torch.no_grad():
        full = sft_loss(model(padded.tokens, **padded.inputs()), padded.tokens,
                        padded.labels_mask)
    assert float(full) == pytest.approx(sum(alone) / data.targets(idx), abs=1e-6)


class Words:
    """A tokenizer of whitespace words w<i> (id i) with BOS 1 and EOS 2, for hand-checked ids."""

    bos_id, eos_id, pad_id, chat_template = 1, 2, 0, None

    def encode(self, text, bos=True):
        return ([1] if bos else []) + [int(w[1:]) for w in text.split()]


def test_rows_tokens_and_masks_by_hand():
    tok = Words()
    assert encode_row(tok, SFTRow("w5 w6", " w7 w8"), 16, True) == (
        [1, 5, 6, 7, 8, 2], [0, 0, 0, 1, 1, 1], False)
    assert encode_row(tok, SFTRow("w5 w6", " w7 w8"), 16, False)[1] == [1] * 6
    assert encode_row(tok, SFTRow("", "w5 w6"), 16, True) == ([1, 5, 6, 2], [1] * 4, False)
    assert encode_row(tok, SFTRow("w5 w6", " w7 w8"), 4, True) == (
        [1, 5, 6, 7], [0, 0, 0, 1], True)  # the first max_len tokens kept
    assert encode_row(tok, SFTRow("w5 w6", " w7 w8", ends=False), 16, True) == (
        [1, 5, 6, 7, 8], [0, 0, 0, 1, 1], False)  # a beginning: no EOS to learn


def test_a_correction_of_a_cut_off_response_is_no_whole_story(tmp_path):
    """The sampler cut the response at max_new_tokens (source ended False): its correction
    trains as a beginning (no EOS); a correction of a response that ended is whole."""
    store = ComparisonStore(tmp_path / "store.jsonl")
    store.append(Correction(item_id="a", prompt="w3", response=" w5 w6", corrected=" w5",
                            source={"ended": False}))
    store.append(Correction(item_id="b", prompt="w3", response=" w7 w8", corrected=" w7",
                            source={"ended": True}))
    store.append(Correction(item_id="c", prompt="w3", response="", corrected=" w9"))
    rows = read_rows([str(store.path)])[0]
    assert [r.ends for r in rows] == [False, True, True]
    assert [encode_row(Words(), r, 16, True)[0][-1] for r in rows] == [5, 2, 2]


def test_rows_from_a_store_trl_files_and_text(tmp_path):
    store = ComparisonStore(tmp_path / "store.jsonl")
    store.append(Correction(item_id="c", prompt="P", response="bad", corrected="good",
                            group="g1"))
    store.append(Correction(item_id="s", prompt="P", response="x", corrected="", skipped=True))
    store.append(Comparison(item_id="k", prompt="P", a="a", b="b", label="a"))
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "Q", "completion": " A"}) + "\n" + json.dumps(
        {"prompt": [{"role": "user", "content": "hi"}],
         "completion": [{"role": "assistant", "content": "yo"}]}) + "\n")
    text = tmp_path / "t.txt"
    text.write_text("First story.\n\n\nSecond\nstory.\n")
    rows, other = read_rows([str(store.path), str(pc), str(text)])
    assert [(r.prompt, r.completion) for r in rows] == [
        ("P", "good"), ("Q", " A"), ([{"role": "user", "content": "hi"}],
                                     [{"role": "assistant", "content": "yo"}]),
        ("", "First story."), ("", "Second\nstory.")]
    assert rows[0].group == "g1" and other == 2  # the skip and the comparison give no row
    with pytest.raises(FileNotFoundError, match="data.paths: .*nope"):
        read_rows([str(tmp_path / "nope.jsonl")])


# ----------------------------------------------------------------------------- against TRL

WORDS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"] + [f"w{i}" for i in range(59)]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}"
            "{{ '<|' + m['role'] + '|> ' + m['content'] + ' </s> ' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def llama_folder(tmp_path):
    """A random tiny transformers LlamaForCausalLM with a word tokenizer (BOS by its
    post-processor) and a chat template, saved; -> (hf model, folder)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(WORDS[:5])
    t.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                     special_tokens=[("<s>", 1)])
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    folder = tmp_path / "llama"
    hf.save_pretrained(folder)
    t.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": TEMPLATE}))
    return hf, folder


def trl_loss(hf, folder, tmp_path, rows, **kw):
    """TRL SFTTrainer's tokenised rows and its `compute_loss` on all rows as one batch."""
    trl = pytest.importorskip("trl", reason="trl is the reference (pip install -e .[dev])")
    from datasets import Dataset
    from transformers import AutoTokenizer

    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True,
                         per_device_train_batch_size=len(rows), **kw)
    tr = trl.SFTTrainer(model=hf, args=args, train_dataset=Dataset.from_list(rows),
                        processing_class=AutoTokenizer.from_pretrained(folder))
    ds = tr.train_dataset
    batch = tr.data_collator([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        return ds, float(tr.compute_loss(tr.model, dict(batch)))


STANDARD = [{"prompt": "w5 w6 w7", "completion": " w8 w9"},
            {"prompt": "w11", "completion": " w12 w13 w14 w15"},
            {"prompt": "w7 w7 w7 w7 w7", "completion": " w16"}]
CHAT = [{"prompt": [{"role": "user", "content": "w5 w6"}],
         "completion": [{"role": "assistant", "content": "w7 w8"}]},
        {"prompt": [{"role": "system", "content": "w9"}, {"role": "user", "content": "w10"}],
         "completion": [{"role": "assistant", "content": "w11 w12 w13"}]}]


@pytest.mark.parametrize("rows", [STANDARD, CHAT], ids=["standard", "conversational"])
def test_loss_equals_trl_sft_trainer(tmp_path, rows):
    hf, folder = llama_folder(tmp_path)
    ds, theirs = trl_loss(hf, folder, tmp_path, rows, completion_only_loss=True)
    model, tok = load_hf(folder)
    data = encode_rows([SFTRow(r["prompt"], r["completion"]) for r in rows], tok, 64, True)
    assert data.ids == [r["input_ids"] for r in ds]  # the same tokens ...
    assert [[int(x != -100) for x in r["labels"]][1:] for r in ds] == [
        m[1:] for m in data.masks]  # ... and the same targets
    idx = list(range(len(rows)))
    for pack_to in (0, 64):  # padded rows, and all rows packed into one sequence
        b = layout(data, idx, tok.pad_id, pack_to)
        with torch.no_grad():
            ours = float(sft_loss(model.eval()(b.tokens, **b.inputs()), b.tokens,
                                  b.labels_mask))
        assert ours == pytest.approx(theirs, abs=1e-5), pack_to


def test_loss_equals_trl_packed_sft_trainer(tmp_path):
    """TRL's own packing (best-fit decreasing, position ids) gives the same mean loss."""
    hf, folder = llama_folder(tmp_path)
    ds, theirs = trl_loss(hf, folder, tmp_path, STANDARD, packing=True, max_length=64)
    assert len(ds) == 1  # TRL packed the three rows into one sequence
    model, tok = load_hf(folder)
    data = encode_rows([SFTRow(r["prompt"], r["completion"]) for r in STANDARD], tok, 64, True)
    b = layout(data, [0, 1, 2], tok.pad_id, 64)
    with torch.no_grad():
        ours = float(sft_loss(model.eval()(b.tokens, **b.inputs()), b.tokens, b.labels_mask))
    assert ours == pytest.approx(theirs, abs=1e-5)


# ----------------------------------------------------------------------------- end to end


def demonstrations(path, n=48):
    """Prompt-completion rows with a few repeated completions (learnable in a few steps)."""
    ends = [" She smiled and went home.", " He was very happy.", " They played all day."]
    rows = [{"prompt": f"Once upon a time, there was a child number {i}.",
             "completion": ends[i % 3]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_args(tmp_path, out, *extra):
    return [f"out_dir={tmp_path / out}", f"model.init={STORIES}",
            f"data.paths=[{tmp_path / 'demos.jsonl'}]", "data.max_len=64",
            "data.val_fraction=0.25", "train.batch_size=8", "train.lr=5e-3",
            "train.warmup_steps=1", "train.max_steps=8", "train.eval_every=4",
            "train.save_every=2", "progress=false", "runtime.threads=1", *extra]


def losses(folder):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_train_sft_lowers_the_loss_and_resumes_exactly(tmp_path, capsys):
    need_shared()
    demonstrations(tmp_path / "demos.jsonl")
    assert main(["train-sft", *run_args(tmp_path, "a")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    a = losses(tmp_path / "a")
    assert list(a) == list(range(1, 9))
    assert a[8] < 0.6 * a[1], a  # the completions are learnt
    assert summary["last_val_loss"] < summary["last_val_accuracy"] * 10  # figures present
    assert (tmp_path / "a/state").is_dir() and (tmp_path / "a/policy/sft.json").is_file()
    assert main(["train-sft", *run_args(tmp_path, "b", "train.stop_at=3")]) == 0
    assert list(losses(tmp_path / "b")) == [1, 2, 3]
    assert main(["train-sft", *run_args(tmp_path, "b")]) == 0
    b = losses(tmp_path / "b")
    assert list(b) == list(a) and b == pytest.approx(a, abs=1e-6)  # every step, once
    wa, wb = (read_safetensors(tmp_path / r / "policy") for r in "ab")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_accumulation_and_packing_change_nothing(tmp_path):
    need_shared()
    demonstrations(tmp_path / "demos.jsonl")
    common = ("train.max_steps=3", "train.save_every=0", "train.eval_every=0")
    for out, extra in (("a", ()), ("b", ("train.micro_batch_size=2",)),
                       ("c", ("train.packing=false",))):
        assert main(["train-sft", *run_args(tmp_path, out, *common, *extra)]) == 0
    a = losses(tmp_path / "a")
    assert list(a) == [1, 2, 3]
    first = {r: json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[1])
             for r in "abc"}
    for other in "bc":
        for key in ("loss", "grad_norm", "accuracy"):  # the same step-1 loss and gradients
            assert first[other][key] == pytest.approx(first["a"][key], abs=1e-5), key
        # then fp32 sums in another order (kernels, accumulation), through Adam's steps
        assert losses(tmp_path / other) == pytest.approx(a, rel=1e-4, abs=0), other


def test_a_bad_config_key_is_named(tmp_path, capsys):
    assert main(["train-sft", "data.no_such_key=1"]) != 0
    assert "data.no_such_key: unknown key" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.batch_size: must be >= 1"):
        load_config(SFTConfig, None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="data.max_len"):
        load_config(SFTConfig, None, ["data.max_len=2"])
