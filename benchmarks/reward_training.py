"""Reward-model training speed: this project vs TRL's `RewardTrainer`, same weights and data.

    python benchmarks/reward_training.py --shape small   # stories260K (pretrained)
    python benchmarks/reward_training.py --shape 25m     # ~25M-parameter Llama (random init)
    python benchmarks/reward_training.py --shape minilm  # all-MiniLM-L6-v2 encoder (BERT)
    python benchmarks/reward_training.py --shape smollm2-135m --steps 2 --repeats 1
        # or qwen2-0.5b: random weights in that shape (`benchmarks/shapes.py`); --device cuda

--shape minilm: the shared all-MiniLM-L6-v2 folder as our encoder reward model (mean pooling,
two rows per pair, batches grouped by length) vs TRL's RewardTrainer on
`AutoModelForSequenceClassification` from the same folder (BERT's pooler + a linear head).
Same HH pairs and split, steps, batch size, learning rate, schedule and threads, fp32. TRL is
given our token ids (its pre-tokenised `chosen_ids` / `rejected_ids` columns: the same
[CLS] prompt [SEP] response [SEP] template and truncation, so it drops nothing); its collator
passes no token_type_ids, so the HF model sees segment 0 throughout (ours: 1 for the
response). Held-out accuracy of both on the same held-out pairs (ids identical). TRL runs as
its users run it on CPU: fp32 (bf16 off, for the same arithmetic), gradient checkpointing off
(its default is on, which costs it a second forward), its default fused AdamW, no evaluation,
dataloader workers 0, the same thread count. Ours and TRL alternate `--repeats` times (the
machine may be shared); the JSON has every run's pairs/s, the medians and their ratio, and
the CPU's name. Both train `--steps` x `--batch-size` pairs, each side truncated to
`--max-len` tokens by our rule (TRL gets the truncated ids, so it drops none); TRL pads each
batch to its longest row, ours groups batches by length and runs the layers on the real
tokens only (`rlhf.lm.encoders.model`).

Needs the benchmark extra (`pip install -e .[bench]`: transformers, trl, accelerate).
Data: HH-RLHF harmless-base pairs, split by prompt (80% train / 20% held out). Both trainers
get the same pairs: those whose two sides fit in --max-len tokens, because TRL *drops* longer
pairs while this project truncates them (the number TRL would drop is printed too).
Both start from the same weights (our backbone converted to `LlamaForSequenceClassification`,
the same initial head), use the same batch size, steps, learning rate, warmup + cosine
schedule, gradient clipping and thread count. Timed: the training loop only (TRL's
`train_runtime`; our loop's own pairs/s), not data preparation.

Each side runs in fp32 and in bf16 autocast (CPUs with avx512_bf16 multiply bf16 ~2x faster,
but the casts cost more than they save on tiny models), TRL with gradient checkpointing off;
TRL also once with its defaults (bf16 + gradient checkpointing). Prints one JSON line:
pairs_per_s (our fastest precision), trl_pairs_per_s (TRL's fastest of fp32 / bf16, both
without gradient checkpointing), trl_default_pairs_per_s, every setting's speed, ratio (ours
fastest / TRL fastest), held-out accuracy of each fastest model, the length rule on the same
held-out pairs, and the share of the machine's measured matmul FLOP/s (in the precision of our
fastest run) that our training reaches (6 FLOPs per weight per real token + attention, as
Kaplan et al. 2020: `shapes.train_flops`), for TRL too (`mfu`, `trl_mfu`, each against the
peak of its fastest run's precision), with the CPU and its SIMD flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

from rlhf.config import load_config  # noqa: E402
from rlhf.feedback.derive import to_pairs  # noqa: E402
from rlhf.feedback.formats import read_hh  # noqa: E402
from rlhf.lm.folders import hf_config, load_model, save_model, to_hf_state_dict  # noqa: E402
from rlhf.lm.model import ModelArgs, Transformer  # noqa: E402
from rlhf.preferences.data import split_by_group  # noqa: E402
from rlhf.preferences.tokens import encode_pair_side, packed_length  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402
from rlhf.reward.evaluate import evaluate  # noqa: E402
from rlhf.reward.model import init_reward_model  # noqa: E402
from rlhf.reward.train import train  # noqa: E402

HH = "../shared/data/preferences/hh-rlhf-harmless-base-test.jsonl.gz"
STORIES = "../shared/models/stories260K"
MINILM = "../shared/models/all-MiniLM-L6-v2"


def backbone_folder(shape: str, folder: Path) -> Path:
    """The starting weights as an HF-style folder (stories260K, a random 25M Llama, or
    random weights in a `shapes.SHAPES` shape)."""
    if shape in shapes.SHAPES:
        return shapes.start_model(shape, folder)
    model, tok = load_model(STORIES)
    if shape == "25m":
        torch.manual_seed(0)
        model = Transformer(ModelArgs(dim=512, hidden_dim=1376, n_layers=8, n_heads=8,
                                      n_kv_heads=8, vocab_size=512, max_seq_len=512))
    return save_model(model, tok, folder / "init")


def data(tok, max_len: int, seed: int):
    """(train pairs, held-out pairs) that fit in max_len, and how many did not."""
    pairs = to_pairs(read_hh(HH))
    train_p, val_p = split_by_group(pairs, 0.2, seed)

    def fits(p):
        return all(not encode_pair_side(tok, p.prompt, r, max_len)[1]
                   for r in (p.chosen, p.rejected))

    kept = [p for p in train_p if fits(p)], [p for p in val_p if fits(p)]
    return kept[0], kept[1], len(train_p) - len(kept[0])


def run_ours(model: str, train_p, a, out: Path, precision: str | None = None
             ) -> tuple[float, object, object]:
    """Our reward training on `train_p`; `model` is the override naming the backbone
    (model.init=... or model.backbone=...). -> (pairs/s, reward model, tokenizer)."""
    out.mkdir(parents=True)
    rows = out / "train.jsonl"
    with open(rows, "w") as f:
        for p in train_p:
            f.write(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                "rejected": p.rejected}) + "\n")
    cfg = load_config(RewardTrainConfig, None, [
        f"out_dir={out / 'ours'}", model, f"data.paths=[{rows}]",
        "data.val_fraction=0", f"data.max_len={a.max_len}", "model.n_members=1",
        "model.bootstrap=false", f"train.batch_size={a.batch_size}",
        f"train.max_steps={a.steps}", f"train.lr={a.lr}", f"train.warmup_steps={a.warmup}",
        "train.min_lr_ratio=0", "train.eval_every=0", "train.save_every=0", "progress=false",
        f"runtime.threads={a.threads}", f"runtime.seed={a.seed}",
        f"runtime.device={a.device}",
        *([f"runtime.precision={precision}"] if precision else [])])
    train(cfg)
    last = [json.loads(x) for x in (out / "ours/metrics.jsonl").read_text().splitlines()]
    speed = [r["pairs_per_s"] for r in last if "pairs_per_s" in r][-1]
    from rlhf.reward.model import load_reward_model

    rm, tok = load_reward_model(out / "ours/model")
    return speed, rm, tok


def hf_reward_model(init: Path):
    """Our starting backbone + the same initial head, as an HF sequence classifier of the
    backbone's family (LlamaForSequenceClassification, Qwen2ForSequenceClassification)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    rm, _ = init_reward_model(init, 1, seed=0)  # the head our run starts from (same seed)
    cfg = hf_config(rm.backbone.args)
    cfg.update(num_labels=1, pad_token_id=2)
    cfg.pop("architectures")
    kind = cfg.pop("model_type")
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(kind, **cfg))
    sd = to_hf_state_dict(rm.backbone)
    sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    sd["score.weight"] = rm.head.weight.detach().clone()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model


def hf_tokenizer(init: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(init / "tokenizer.json"), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", pad_token="</s>")


TRL_SETTINGS = {"fp32": {"bf16": False, "gradient_checkpointing": False},
                "bf16": {"bf16": True, "gradient_checkpointing": False},
                "default": {}}  # TRL's defaults: bf16 and gradient checkpointing on


def run_trl(init: Path, train_p, a, out: Path, setting: str):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, tok = hf_reward_model(init), hf_tokenizer(init)
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
                            for p in train_p])
    extra = TRL_SETTINGS[setting]
    args = RewardConfig(output_dir=str(out / "trl"), per_device_train_batch_size=a.batch_size,
                        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                        warmup_steps=a.warmup, weight_decay=0.0, max_grad_norm=1.0,
                        max_length=a.max_len, use_cpu=a.device == "cpu", report_to="none",
                        save_strategy="no", logging_steps=a.steps, seed=a.seed,
                        disable_tqdm=True, dataloader_num_workers=0, **extra)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    metrics = trainer.train().metrics
    a.trl_train_pairs = len(trainer.train_dataset)  # after TRL's own length filter
    return a.steps * a.batch_size / metrics["train_runtime"], trainer.model, tok


@torch.no_grad()
def hf_accuracy(model, tok, pairs, batch_size: int = 32) -> float:
    """Held-out accuracy of an HF sequence classifier, tokenised as TRL does
    (prompt + response + EOS text), scored by the model's own last-token rule."""
    model.eval().float()
    right = 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        texts = ([p.prompt + p.chosen + tok.eos_token for p in chunk]
                 + [p.prompt + p.rejected + tok.eos_token for p in chunk])
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        r = model(**enc).logits.squeeze(-1).float()  # (2b,)
        b = len(chunk)
        right += float((r[:b] > r[b:]).float().sum() + 0.5 * (r[:b] == r[b:]).float().sum())
    return right / len(pairs)


def pair_flops(init: Path, pairs, tok, max_len: int, lm_head: bool = False) -> float:
    """Training FLOPs per pair actually needed, on average (`shapes.train_flops`): 6 * matmul
    weights * tokens of the packed row (the shared prompt counted once, as `pack_pairs`
    computes it) + attention of each side over its own prompt and response. The output layer
    counts only with `lm_head` (DPO's policy; a reward model has a scalar head instead)."""
    from rlhf.lm.folders import load_hf

    args = load_hf(init, hub_ok=False)[0].args
    n, layers, width = shapes.shape_of(args)
    n -= 0 if lm_head else args.vocab_size * args.dim
    total = 0.0
    for p in pairs:
        sides = [encode_pair_side(tok, p.prompt, r, max_len)[0] for r in (p.chosen, p.rejected)]
        total += shapes.train_flops(n, packed_length(*sides))
        total += sum(shapes.train_flops(0, len(ids), layers, len(ids), width) for ids in sides)
    return total / len(pairs)


def run_trl_minilm(train_ids, a, out: Path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=1)
    tok = AutoTokenizer.from_pretrained(MINILM)
    ds = Dataset.from_list([{"chosen_ids": c, "rejected_ids": r} for c, r in train_ids])
    args = RewardConfig(output_dir=str(out / "trl"), per_device_train_batch_size=a.batch_size,
                        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                        warmup_steps=a.warmup, weight_decay=0.0, max_grad_norm=1.0,
                        max_length=a.max_len, use_cpu=a.device == "cpu", report_to="none",
                        save_strategy="no", logging_steps=a.steps, seed=a.seed,
                        disable_tqdm=True, dataloader_num_workers=0, bf16=False,
                        gradient_checkpointing=False)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    metrics = trainer.train().metrics
    a.trl_train_pairs = len(trainer.train_dataset)
    return a.steps * a.batch_size / metrics["train_runtime"], trainer.model


@torch.no_grad()
def hf_accuracy_ids(model, ids, pad_id: int, batch_size: int = 32) -> float:
    """Held-out accuracy of an HF sequence classifier on (chosen ids, rejected ids) pairs."""
    from rlhf.preferences.tokens import pad_right

    model.eval()
    right = 0.0
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        tokens, mask = pad_right([c for c, _ in chunk] + [r for _, r in chunk], pad_id)
        r = model(input_ids=tokens, attention_mask=mask).logits.squeeze(-1).float()  # (2b,)
        b = len(chunk)
        right += float((r[:b] > r[b:]).float().sum() + 0.5 * (r[:b] == r[b:]).float().sum())
    return right / len(ids)


def main_minilm(a) -> None:
    """Ours and TRL alternately, `repeats` times each (the machine is shared: its other core's
    load changes from minute to minute); the medians, their ratio and every run's speed."""
    from rlhf.lm.encoders.folders import load_encoder

    tok = load_encoder(MINILM).tokenizer
    pairs = to_pairs(read_hh(HH))
    train_p, val_p = split_by_group(pairs, 0.2, a.seed)
    val_p = val_p[:a.held_out]
    val_ids = [tuple(encode_pair_side(tok, p.prompt, r, a.max_len)[0]
                     for r in (p.chosen, p.rejected)) for p in val_p]
    train_ids = [tuple(encode_pair_side(tok, p.prompt, r, a.max_len)[0]
                       for r in (p.chosen, p.rejected)) for p in train_p]
    ours, trl = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for r in range(a.repeats):
            speed, rm, rtok = run_ours(f"model.backbone={MINILM}", train_p, a, out / f"ours{r}")
            ours.append(speed)
            speed, hf = run_trl_minilm(train_ids, a, out / f"trl{r}")
            trl.append(speed)
        ev = evaluate(rm, rtok, val_p, max_len=a.max_len)  # the last run of each (same seed)
        trl_acc = hf_accuracy_ids(hf, val_ids, tok.pad_id)
    med, trl_med = statistics.median(ours), statistics.median(trl)
    print(json.dumps({
        "shape": "minilm", **shapes.device_info(a.device), "steps": a.steps,
        "batch_size": a.batch_size,
        "max_len": a.max_len, "threads": a.threads, "repeats": a.repeats,
        "train_pairs_available": len(train_p), "pairs_trained": a.steps * a.batch_size,
        "trl_train_pairs": a.trl_train_pairs, "held_out_pairs": len(val_p),
        "pairs_per_s": round(med, 3), "trl_pairs_per_s": round(trl_med, 3),
        "ratio": round(med / trl_med, 2),
        "runs_pairs_per_s": [round(x, 3) for x in ours],
        "runs_trl_pairs_per_s": [round(x, 3) for x in trl],
        "accuracy": round(ev["accuracy"], 4), "trl_accuracy": round(trl_acc, 4),
        "length_rule_accuracy": round(ev["length_rule_accuracy"], 4),
        "shorter_rule_accuracy": round(ev["shorter_rule_accuracy"], 4),
        "time": time.strftime("%H:%M:%S")}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=str.lower, default="small",
                   choices=("small", "25m", "minilm", *shapes.SHAPES), help="small = stories260k")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--held-out", type=int, default=300, help="minilm: held-out pairs scored")
    p.add_argument("--steps", type=int, default=0, help="0: 30 (small) / 4 (25m)")
    p.add_argument("--batch-size", type=int, default=0, help="0: 16 (small) / 8 (25m)")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2,
                   help="alternating runs; best speed kept (minilm: the median)")
    a = p.parse_args()
    if a.shape == "minilm":
        a.steps, a.batch_size = a.steps or 20, a.batch_size or 16
        a.lr = 5e-5 if a.lr == 1e-3 else a.lr
        torch.set_num_threads(a.threads)
        return main_minilm(a)
    small = a.shape in ("small", "stories260k")
    a.steps = a.steps or (30 if small else 4)
    a.batch_size = a.batch_size or (16 if small else 8)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        init = backbone_folder(a.shape, out)
        _, tok = load_model(init)
        train_p, val_p, dropped = data(tok, a.max_len, a.seed)
        ours, trl, models = {}, {}, {}
        for r in range(a.repeats):  # alternate, keep the best: the machine may be shared
            for prec in ("fp32", "bf16"):
                speed, *models[prec] = run_ours(f"model.init={init}", train_p, a,
                                               out / f"ours{r}{prec}", prec)
                ours[prec] = max(ours.get(prec, 0.0), speed)
            for setting in ("fp32", "bf16") + (("default",) if r == 0 else ()):
                speed, *models["trl_" + setting] = run_trl(init, train_p, a,
                                                           out / f"trl{r}{setting}", setting)
                trl[setting] = max(trl.get(setting, 0.0), speed)
        best = max(ours, key=ours.get)
        trl_best = max(("fp32", "bf16"), key=trl.get)
        ev = evaluate(*models[best], val_p, max_len=a.max_len)
        trl_acc = hf_accuracy(*models["trl_" + trl_best], val_p)
        peaks = {"fp32": shapes.matmul_peak(a.threads, device=a.device),
                 "bf16": shapes.matmul_peak(a.threads, torch.bfloat16, a.device)}
        peak = peaks[best]  # the ceiling of the precision our fastest run used
        fpp = pair_flops(init, train_p, tok, a.max_len)
        flops = fpp * ours[best]
    print(json.dumps({
        "shape": a.shape, "params": models[best][0].backbone.args.num_params(), "steps": a.steps,
        **shapes.device_info(a.device), "device": a.device,
        "batch_size": a.batch_size, "max_len": a.max_len, "threads": a.threads,
        "repeats": a.repeats,
        "train_pairs": len(train_p), "held_out_pairs": len(val_p), "trl_would_drop": dropped,
        "trl_train_pairs": a.trl_train_pairs,
        "pairs_per_s": round(ours[best], 2), "precision": best,
        "pairs_per_s_fp32": round(ours["fp32"], 2), "pairs_per_s_bf16": round(ours["bf16"], 2),
        "trl_pairs_per_s": round(trl[trl_best], 2), "trl_precision": trl_best,
        "trl_fp32_pairs_per_s": round(trl["fp32"], 2),
        "trl_bf16_pairs_per_s": round(trl["bf16"], 2),
        "trl_default_pairs_per_s": round(trl["default"], 2),
        "ratio": round(ours[best] / trl[trl_best], 2),
        "ratio_default": round(ours[best] / trl["default"], 2),
        "accuracy": round(ev["accuracy"], 4), "trl_accuracy": round(trl_acc, 4),
        "length_rule_accuracy": round(ev["length_rule_accuracy"], 4),
        "train_gflops": round(flops / 1e9, 2), "matmul_gflops": round(peak / 1e9, 1),
        "matmul_gflops_fp32": round(peaks["fp32"] / 1e9, 1),
        "matmul_gflops_bf16": round(peaks["bf16"] / 1e9, 1),
        "flops_fraction": round(flops / peak, 3),
        **shapes.efficiency(peak, flops, fpp * trl[trl_best], peer_peak=peaks[trl_best]),
        "time": time.strftime("%H:%M:%S")}))


if __name__ == "__main__":
    main()
