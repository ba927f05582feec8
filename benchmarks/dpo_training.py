"""DPO training speed and held-out implicit-reward accuracy: `rlhf train-dpo` vs TRL's
`DPOTrainer`, same model, data and settings, measured in one run.

    python benchmarks/dpo_training.py [--steps 40] [--batch-size 16] [--max-len 256] [--repeats 2]
        [--shape stories260k|smollm2-135m|qwen2-0.5b] [--device cpu|cuda]

Needs transformers and trl (the benchmark extra). Model: stories260K (../shared, llama2.c
format), exported once to an HF folder with `rlhf.lm.folders.save_model`; both trainers start
from it and use it as the reference (`--shape smollm2-135m` / `qwen2-0.5b`: random weights in
that shape, `benchmarks/shapes.py`; slow on a CPU, give it few steps and one repeat).
Data: HH-RLHF harmless-base pairs split by prompt (80/20),
only pairs whose two sides fit in --max-len tokens (TRL truncates differently; neither side is
cut for either trainer). Settings (both): the sigmoid DPO loss, beta, batch size, steps, AdamW
lr with linear warmup + cosine decay to 0, grad-norm clipping 1, fp32, no gradient
checkpointing, the same thread count.

Timed, two ways. Training loop (the headline `pairs_per_s`, `ratio`): our loop's own pairs/s
vs TRL's `train_runtime`; TRL runs with the reference model every step (its default) and with
`precompute_ref_log_probs` (its reference pass then runs in the constructor, outside
`train_runtime`, as ours runs before our loop); the faster is the peer. End to end
(`end_to_end_*`): our whole `train()` call (loading, data, the reference pass and its cache,
the loop, saving) vs TRL's `DPOTrainer(...)` + `train()` (tokenising, its reference pass).
Held-out accuracy of both: the implicit reward beta * log(pi / pi_ref) of the same
held-out pairs, computed by the same code (`rlhf.dpo.implicit.evaluate`; TRL's model is saved
as an HF folder and read back). Prints one JSON line, with the CPU, its SIMD flags, the matmul
peak measured in the same run and each side's MFU in the loop: FLOPs per pair = the policy's
training pass over the packed pair (6·N·T + attention, `reward_training.pair_flops`); the
reference pass is not counted (ours runs it before the loop, so does TRL's precompute; TRL's
every-step setting does that work on top and scores lower for it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402
from reward_training import data, pair_flops  # noqa: E402

from rlhf.config import load_config  # noqa: E402
from rlhf.dpo.config import DPOTrainConfig  # noqa: E402
from rlhf.dpo.implicit import META_FILE, evaluate  # noqa: E402
from rlhf.dpo.train import train  # noqa: E402
from rlhf.lm.folders import load_model  # noqa: E402


def run_ours(init: Path, train_p, a, out: Path) -> tuple[float, float, Path]:
    """(pairs/s of the whole train() call, pairs/s of the loop alone, policy folder)."""
    out.mkdir(parents=True)
    rows = out / "train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                        "rejected": p.rejected}) + "\n" for p in train_p))
    cfg = load_config(DPOTrainConfig, None, [
        f"out_dir={out / 'ours'}", f"model.init={init}", f"data.paths=[{rows}]",
        "data.val_fraction=0", f"data.max_len={a.max_len}", f"loss.beta={a.beta}",
        f"train.batch_size={a.batch_size}", f"train.max_steps={a.steps}", f"train.lr={a.lr}",
        f"train.warmup_steps={a.warmup}", "train.min_lr_ratio=0", "train.eval_every=0",
        "train.save_every=0", "train.weight_decay=0", "progress=false",
        f"runtime.threads={a.threads}", f"runtime.seed={a.seed}", "runtime.precision=fp32",
        f"runtime.device={a.device}"])
    t0 = time.time()
    train(cfg)
    wall = time.time() - t0
    rows = [json.loads(x) for x in (out / "ours/metrics.jsonl").read_text().splitlines()]
    loop = [r["pairs_per_s"] for r in rows if "pairs_per_s" in r][-1]
    return a.steps * a.batch_size / wall, loop, out / "ours" / "policy"


def run_trl(init: Path, train_p, a, out: Path, precompute: bool
            ) -> tuple[float, float, Path]:
    """(pairs/s of DPOTrainer() + train(), pairs/s by TRL's train_runtime, the trained
    policy saved as a DPO policy folder)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(init / "tokenizer.json"), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
                            for p in train_p])
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=a.batch_size,
                     max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                     warmup_steps=a.warmup, weight_decay=0.0, max_grad_norm=1.0,
                     beta=a.beta, loss_type=["sigmoid"], max_length=2 * a.max_len,
                     precompute_ref_log_probs=precompute, use_cpu=a.device == "cpu",
                     report_to="none",
                     save_strategy="no", logging_steps=a.steps, seed=a.seed,
                     disable_tqdm=True, dataloader_num_workers=0, bf16=False,
                     gradient_checkpointing=False)
    t0 = time.time()  # the constructor tokenises and (precompute) runs the reference pass
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    runtime = trainer.train().metrics["train_runtime"]
    wall = time.time() - t0
    folder = out / "policy"
    trainer.model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(init / "tokenizer.json", folder / "tokenizer.json")
    (folder / META_FILE).write_text(json.dumps({"reference": str(init), "beta": a.beta,
                                                "max_len": a.max_len}))
    return a.steps * a.batch_size / wall, a.steps * a.batch_size / runtime, folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="alternating runs; best speed kept")
    shapes.add_arguments(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        init = shapes.start_model(a.shape, out)
        tok = load_model(init)[1]
        train_p, val_p, dropped = data(tok, a.max_len, a.seed)
        speed: dict[str, float] = {}
        folders: dict[str, Path] = {}
        for r in range(a.repeats):  # alternate, keep the best: the machine may be shared
            runs = {"ours": run_ours(init, train_p, a, out / f"ours{r}")}
            for pre in (False, True):
                name = "trl_precompute" if pre else "trl"
                runs[name] = run_trl(init, train_p, a, out / f"{name}{r}", pre)
            for name, (total, loop, folders[name]) in runs.items():
                speed[name] = max(speed.get(name, 0.0), total)
                speed[name + "_loop"] = max(speed.get(name + "_loop", 0.0), loop)
        peer = max(("trl", "trl_precompute"), key=lambda k: speed[k + "_loop"])
        acc = {k: evaluate(folders[k], val_p, max_len=a.max_len) for k in ("ours", peer)}
        fpp = pair_flops(init, train_p, tok, a.max_len, lm_head=True)
    peak = shapes.matmul_peak(a.threads, device=a.device)
    print(json.dumps({
        "model": shapes.label(a.shape), **shapes.device_info(a.device), "device": a.device,
        "steps": a.steps, "batch_size": a.batch_size,
        "max_len": a.max_len, "beta": a.beta, "lr": a.lr, "threads": a.threads,
        "repeats": a.repeats, "train_pairs": len(train_p), "held_out_pairs": len(val_p),
        "pairs_not_fitting": dropped,
        "pairs_per_s": round(speed["ours_loop"], 2),
        "trl_pairs_per_s": round(speed[peer + "_loop"], 2), "trl_setting": peer,
        "ratio": round(speed["ours_loop"] / speed[peer + "_loop"], 2),
        **shapes.efficiency(peak, fpp * speed["ours_loop"], fpp * speed[peer + "_loop"]),
        "trl_ref_every_step_pairs_per_s": round(speed["trl_loop"], 2),
        "trl_precompute_pairs_per_s": round(speed["trl_precompute_loop"], 2),
        "end_to_end_pairs_per_s": round(speed["ours"], 2),
        "trl_end_to_end_pairs_per_s": {k: round(speed[k], 2) for k in ("trl", "trl_precompute")},
        "end_to_end_ratio": round(speed["ours"] / max(speed["trl"], speed["trl_precompute"]), 2),
        "accuracy": round(acc["ours"]["accuracy"], 4),
        "trl_accuracy": round(acc[peer]["accuracy"], 4),
        "length_rule_accuracy": round(acc["ours"]["length_rule_accuracy"], 4),
        "mean_margin": round(acc["ours"]["mean_margin"], 4),
        "trl_mean_margin": round(acc[peer]["mean_margin"], 4),
        "time": time.strftime("%H:%M:%S")}))


if __name__ == "__main__":
    main()
