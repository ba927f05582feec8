"""KTO training speed at equal loss curves: `rlhf train-kto` vs TRL's `KTOTrainer`, same model,
rows and settings, measured in one run.

    python benchmarks/kto_training.py [--steps 30] [--batch-size 16] [--max-len 256]
        [--repeats 3] [--threads 1] [--shape smollm2-135m] [--device cuda]

Needs transformers and trl (the benchmark extra). Model: stories260K (../shared, llama2.c
format), exported once to an HF folder with `rlhf.lm.folders.save_model`; both trainers start
from it and use it as the frozen reference (`--shape smollm2-135m` / `qwen2-0.5b`: random
weights in that shape, `benchmarks/shapes.py`; slow on a CPU, give it few steps).
Data: HH-RLHF harmless-base
comparisons unpaired as configs/kto.yaml does (chosen desirable, rejected undesirable; TRL's
`unpair_preference_dataset` rule), only rows whose prompt + completion fit in --max-len
tokens (neither trainer truncates), written as a TRL unpaired file that both read.
Settings (both): beta 0.1, desirable/undesirable weights 1, the KL reference point from each
batch's mismatched pairs (the reference model run every step: TRL's default), batch size
(one forward pass per step), steps, AdamW lr with cosine decay to 0 (no warm-up by default:
the two schedulers' warm-ups are one step apart, their cosines the same), no weight decay,
grad-norm clipping 1, fp32, the same thread count.

Timed: rows per second of the training loop: ours from its metrics (`rows_per_s`), TRL's as
steps x batch / `train_runtime`. Repeats alternate the trainers; speeds are medians. The loss
curves (per-step mean KTO loss) of both are printed so that "at equal loss" can be judged.
One JSON line, with the CPU, its SIMD flags, the matmul peak measured in the same run and each
side's MFU: FLOPs per row = the policy's training pass (6·N·T + attention,
`shapes.train_flops`) + three forward passes (2·N·T + attention each: the reference on the row,
the policy and the reference on a mismatched KL row, taken as long as the mean row), T = the
row's prompt + completion tokens.
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
from rlhf.kto.config import KTOTrainConfig  # noqa: E402
from rlhf.kto.data import encode_row, unpaired_rows  # noqa: E402
from rlhf.kto.train import train  # noqa: E402
from rlhf.lm.folders import load_model  # noqa: E402
from rlhf.preferences.data import read_feedback  # noqa: E402

HH = "../shared/data/preferences/hh-rlhf-harmless-base-test.jsonl.gz"


def unpaired(tok, max_len: int, n: int) -> list[dict]:
    """The first n HH rows (unpaired comparisons) that fit in max_len, as TRL unpaired rows."""
    rows = []
    for r in unpaired_rows(read_feedback([HH]), ["comparison"]):
        if len(rows) < n and not encode_row(tok, r.prompt, r.completion, max_len)[2]:
            rows.append({"prompt": r.prompt, "completion": r.completion, "label": r.label})
    return rows


def run_ours(init: Path, rows_file: Path, a, out: Path) -> tuple[float, list[float]]:
    """(rows/s of our loop, the per-step losses)."""
    cfg = load_config(KTOTrainConfig, None, [
        f"out_dir={out}", f"model.init={init}", f"data.paths=[{rows_file}]",
        "data.val_fraction=0", f"data.max_len={a.max_len}", f"loss.beta={a.beta}",
        f"train.batch_size={a.batch_size}", f"train.micro_batch_size={a.batch_size}",
        f"train.max_steps={a.steps}", f"train.lr={a.lr}", f"train.warmup_steps={a.warmup}",
        "train.min_lr_ratio=0", "train.eval_every=0", "train.save_every=0",
        "train.weight_decay=0", "progress=false", f"runtime.threads={a.threads}",
        f"runtime.seed={a.seed}", "runtime.precision=fp32", f"runtime.device={a.device}"])
    train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rows_per_s" in r]
    return steps[-1]["rows_per_s"], [r["loss"] for r in steps]


def run_trl(init: Path, rows: list[dict], a, out: Path) -> tuple[float, list[float]]:
    """(rows/s by TRL's train_runtime, the per-step losses)."""
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.trainer_callback import PrinterCallback
    from trl import KTOConfig, KTOTrainer

    datasets.disable_progress_bars()  # stdout keeps only the JSON line
    transformers.utils.logging.disable_progress_bar()
    model, ref = (AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32)
                  for _ in range(2))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(init / "tokenizer.json"), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    args = KTOConfig(output_dir=str(out), per_device_train_batch_size=a.batch_size,
                     max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                     warmup_steps=a.warmup, weight_decay=0.0, max_grad_norm=1.0, beta=a.beta,
                     desirable_weight=1.0, undesirable_weight=1.0, max_length=a.max_len,
                     use_cpu=a.device == "cpu", report_to="none", save_strategy="no",
                     logging_steps=1,
                     seed=a.seed, disable_tqdm=True, dataloader_num_workers=0, bf16=False,
                     gradient_checkpointing=False)
    trainer = KTOTrainer(model=model, ref_model=ref.eval(), args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(rows))
    trainer.remove_callback(PrinterCallback)
    runtime = trainer.train().metrics["train_runtime"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return a.steps * a.batch_size / runtime, losses


def flops_per_row(init: Path, tok, rows: list[dict], max_len: int) -> float:
    """Mean FLOPs of one row: training pass + 3 forward passes (see the module docstring)."""
    n, layers, width = shapes.shape_of(load_model(init)[0].args)
    lengths = [sum(map(len, encode_row(tok, r["prompt"], r["completion"], max_len)[:2]))
               for r in rows]
    mean = sum(lengths) / len(lengths)
    return (sum(shapes.train_flops(n, t, layers, t, width) for t in lengths) / len(lengths)
            + 3 * shapes.forward_flops(n, mean, layers, mean, width))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--rows", type=int, default=2000, help="rows of data (the first that fit)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=0,
                   help="warm-up steps (0: both schedules are the same cosine from step 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs; medians kept")
    shapes.add_arguments(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        init = shapes.start_model(a.shape, out)
        tok = load_model(init)[1]
        rows = unpaired(tok, a.max_len, a.rows)
        fpr = flops_per_row(init, tok, rows, a.max_len)
        rows_file = out / "rows.jsonl"
        rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        speed: dict[str, list[float]] = {"ours": [], "trl": []}
        loss: dict[str, list[float]] = {}
        for r in range(a.repeats):  # alternate: the machine may be shared
            s, loss["ours"] = run_ours(init, rows_file, a, out / f"ours{r}")
            speed["ours"].append(s)
            s, loss["trl"] = run_trl(init, rows, a, out / f"trl{r}")
            speed["trl"].append(s)
    med = {k: statistics.median(v) for k, v in speed.items()}
    peak = shapes.matmul_peak(a.threads, device=a.device)
    tail = max(1, a.steps // 4)
    print(json.dumps({
        "benchmark": "kto_training", "model": shapes.label(a.shape), "steps": a.steps,
        "batch_size": a.batch_size, "max_len": a.max_len, "beta": a.beta, "lr": a.lr,
        "rows": len(rows), "desirable": sum(r["label"] for r in rows),
        **shapes.device_info(a.device), "device": a.device, "threads": a.threads,
        "repeats": a.repeats,
        "ours_rows_per_s": round(med["ours"], 2), "trl_rows_per_s": round(med["trl"], 2),
        "ratio": round(med["ours"] / med["trl"], 2),
        **shapes.efficiency(peak, med["ours"] * fpr, med["trl"] * fpr),
        **{f"{k}_runs": [round(x, 2) for x in v] for k, v in speed.items()},
        "loss_tail_mean": {k: round(statistics.mean(v[-tail:]), 4) for k, v in loss.items()},
        "loss_ours": [round(x, 4) for x in loss["ours"]],
        "loss_trl": [round(x, 4) for x in loss["trl"]], "time": time.strftime("%H:%M:%S")}))


if __name__ == "__main__":
    main()
