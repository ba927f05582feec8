"""Supervised fine-tuning speed at equal loss curves: `rlhf train-sft` vs TRL's `SFTTrainer`,
same model, rows and settings, measured in one run.

    python benchmarks/sft_training.py [--steps 40] [--batch-size 16] [--max-len 256]
        [--repeats 3] [--threads 1] [--trl-packed] [--shape smollm2-135m] [--device cuda]

Needs transformers and trl (the benchmark extra). Model: stories260K (../shared, llama2.c
format), exported once to an HF folder with `rlhf.lm.folders.save_model`; both trainers start
from it (`--shape smollm2-135m` / `qwen2-0.5b`: random weights in that model's shape with
stories260K's tokenizer, `benchmarks/shapes.py`; slow on a CPU, give it few steps).
Data: TinyStories paragraphs
(../shared/data/text) as prompt-completion rows (the first sentence is the prompt, the rest
the completion), only rows that fit in --max-len tokens, so neither trainer truncates;
`same_tokens_as_trl` says whether both tokenise every row to the same ids.
Settings (both): completion-only loss, batch size, steps, AdamW lr with cosine decay to 0 (no
warm-up by default: the two schedulers' warm-ups are one step apart, their cosines the same),
no weight decay, grad-norm clipping 1, fp32, the same thread count.

Timed: trained (completion) tokens per second of the training loop: ours from its metrics
(`tokens_per_s`), TRL's counted in its `compute_loss` over its `train_runtime`. TRL runs
with right-padded batches (its default); `--trl-packed` adds a run with `packing=True`
(best-fit packing into --max-len sequences with position ids: more rows per step, so a
different loss curve), and the faster is the peer. Ours packs a batch's rows into
--max-len sequences where that saves a quarter of the padding, else pads them (its default;
batches grouped by length mostly run padded).
Repeats alternate the trainers; speeds are medians. The loss curves (per-step mean NLL per
trained token) of every run are printed so that "at equal loss" can be judged. One JSON line,
with the CPU, its SIMD flags, the matmul peak measured in the same run and each side's MFU:
FLOPs per trained token = 6·N·T + attention (`shapes.train_flops`) summed over every row's
tokens (the prompt's included: it is run forward and backward too) / its trained tokens.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

from rlhf.config import load_config  # noqa: E402
from rlhf.lm.folders import load_model  # noqa: E402
from rlhf.sft.config import SFTConfig  # noqa: E402
from rlhf.sft.data import SFTRow, encode_row, read_rows  # noqa: E402
from rlhf.sft.train import train  # noqa: E402

TEXT = "../shared/data/text/tinystories-sample.txt"


def demonstrations(tok, max_len: int) -> list[SFTRow]:
    """TinyStories paragraphs -> (first sentence, rest) rows that fit in max_len tokens."""
    rows = []
    for r in read_rows([TEXT])[0]:
        m = re.match(r"(.+?[.!?]\"?)(\s.+)", r.completion, re.S)
        if m and not encode_row(tok, SFTRow(m[1], m[2]), max_len, True)[2]:
            rows.append(SFTRow(m[1], m[2]))
    return rows


def run_ours(init: Path, rows_file: Path, a, out: Path) -> tuple[float, list[float]]:
    """(trained tokens/s of our loop, the per-step losses)."""
    cfg = load_config(SFTConfig, None, [
        f"out_dir={out}", f"model.init={init}", f"data.paths=[{rows_file}]",
        "data.val_fraction=0", f"data.max_len={a.max_len}", f"train.batch_size={a.batch_size}",
        f"train.max_steps={a.steps}", f"train.lr={a.lr}", f"train.warmup_steps={a.warmup}",
        "train.min_lr_ratio=0", "train.eval_every=0", "train.save_every=0",
        "train.weight_decay=0", "progress=false", f"runtime.threads={a.threads}",
        f"runtime.seed={a.seed}", "runtime.precision=fp32", f"runtime.device={a.device}"])
    train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tokens_per_s" in r]
    return steps[-1]["tokens_per_s"], [r["loss"] for r in steps]


def run_trl(init: Path, rows, a, out: Path, packing: bool
            ) -> tuple[float, list[float], list[list[int]]]:
    """(trained tokens/s by TRL's train_runtime, the per-step losses, its tokenised rows)."""
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    datasets.disable_progress_bars()  # stdout keeps only the JSON line
    transformers.utils.logging.disable_progress_bar()

    class Counting(SFTTrainer):
        trained = 0

        def compute_loss(self, model, inputs, *args, **kw):
            Counting.trained += int((inputs["labels"][:, 1:] != -100).sum())
            return super().compute_loss(model, inputs, *args, **kw)

    model = AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(init / "tokenizer.json"), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    ds = datasets.Dataset.from_list([{"prompt": r.prompt, "completion": r.completion}
                                     for r in rows])
    args = TRLConfig(output_dir=str(out), per_device_train_batch_size=a.batch_size,
                     max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine",
                     warmup_steps=a.warmup, weight_decay=0.0, max_grad_norm=1.0,
                     max_length=a.max_len, completion_only_loss=True, packing=packing,
                     use_cpu=a.device == "cpu", report_to="none", save_strategy="no",
                     logging_steps=1,
                     seed=a.seed, disable_tqdm=True, dataloader_num_workers=0, bf16=False,
                     gradient_checkpointing=False)
    trainer = Counting(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    runtime = trainer.train().metrics["train_runtime"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    ids = [] if packing else [r["input_ids"] for r in trainer.train_dataset]
    return Counting.trained / runtime, losses, ids


def flops_per_trained_token(init: Path, tok, rows, max_len: int) -> float:
    """Training FLOPs of every row's tokens / the rows' trained (completion) tokens."""
    n, layers, width = shapes.shape_of(load_model(init)[0].args)
    flops = trained = 0.0
    for r in rows:
        ids, mask, _ = encode_row(tok, r, max_len, True)
        flops += shapes.train_flops(n, len(ids), layers, len(ids), width)
        trained += sum(mask)
    return flops / trained


def curve(losses: list[float]) -> list[float]:
    return [round(x, 4) for x in losses]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=0,
                   help="warm-up steps (0: both schedules are the same cosine from step 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs; medians kept")
    p.add_argument("--trl-packed", action="store_true",
                   help="also time TRL with packing=True (slow on CPU: about 7x fewer tokens/s)")
    shapes.add_arguments(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        init = shapes.start_model(a.shape, out)
        tok = load_model(init)[1]
        rows = demonstrations(tok, a.max_len)
        rows_file = out / "rows.jsonl"
        rows_file.write_text("".join(json.dumps({"prompt": r.prompt, "completion":
                                                 r.completion}) + "\n" for r in rows))
        trl_runs = (("trl", False), ("trl_packed", True))[:1 + a.trl_packed]
        speed: dict[str, list[float]] = {"ours": [], **{k: [] for k, _ in trl_runs}}
        loss: dict[str, list[float]] = {}
        for r in range(a.repeats):  # alternate: the machine may be shared
            speed_r, loss["ours"] = run_ours(init, rows_file, a, out / f"ours{r}")
            speed["ours"].append(speed_r)
            for name, packing in trl_runs:
                s, loss[name], ids = run_trl(init, rows, a, out / f"{name}{r}", packing)
                speed[name].append(s)
                if ids:
                    same = ids == [encode_row(tok, x, a.max_len, True)[0] for x in rows]
        fpt = flops_per_trained_token(init, tok, rows, a.max_len)
    peak = shapes.matmul_peak(a.threads, device=a.device)
    med = {k: statistics.median(v) for k, v in speed.items()}
    peer = max((k for k, _ in trl_runs), key=med.get)
    tail = max(1, a.steps // 4)
    print(json.dumps({
        "benchmark": "sft_training", "model": shapes.label(a.shape), "steps": a.steps,
        "batch_size": a.batch_size, "max_len": a.max_len, "lr": a.lr, "rows": len(rows),
        "same_tokens_as_trl": same, **shapes.device_info(a.device), "device": a.device,
        "threads": a.threads, "repeats": a.repeats,
        "ours_tokens_per_s": round(med["ours"], 1), "trl_tokens_per_s": round(med[peer], 1),
        "trl_setting": peer, "ratio": round(med["ours"] / med[peer], 2),
        **shapes.efficiency(peak, med["ours"] * fpt, med[peer] * fpt),
        **{f"{k}_runs": [round(x, 1) for x in speed[k]] for k in speed},
        "loss_tail_mean": {k: round(statistics.mean(v[-tail:]), 4) for k, v in loss.items()},
        "loss_ours": curve(loss["ours"]), "loss_trl": curve(loss["trl"]),
        **({"loss_trl_packed": curve(loss["trl_packed"])} if a.trl_packed else {}),
        "time": time.strftime("%H:%M:%S")}))


if __name__ == "__main__":
    main()
