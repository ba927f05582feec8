"""`rlhf train-sft CONFIG [overrides]`: supervised fine-tuning on demonstrations (prompt ->
completion), conversations, plain text, or the corrections in a comparison store.

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder (`rlhf.harness.run`);
2. data (`rlhf.sft.data`): rows from files and stores -> split *by group* (prompt; for plain
   text, the text) -> token ids and labels masks (completion tokens only by default);
3. model (DDP replica or FSDP shards), AdamW, resume from `state/`;
4. steps: the global batch of step s is a pure function of (seed, s); each rank takes its
   shard, cut into micro-batches (packed, or right-padded); loss = `rlhf.sft.losses.sft_loss`
   normalised by the global batch's trained tokens (every token weighs the same however the
   batch is cut); validation (held-out token loss and accuracy) every `eval_every`;
5. the policy folder (+ sft.json) and summary.json.

Metrics per step: loss (mean NLL per trained token), accuracy (greedy token accuracy), tokens
(trained tokens in the step), grad_norm, lr, tokens_per_s (trained tokens per second).
"""

from __future__ import annotations

import math
import time

import torch

from rlhf.config import ConfigError
from rlhf.harness import distributed as dist
from rlhf.harness.optim import lr_at, make_optimizer, set_lr
from rlhf.harness.run import (
    Handover,
    accumulated_step,
    accumulation,
    stage_cli,
    training_run,
)
from rlhf.harness.runtime import autocast
from rlhf.lm.cards import set_metrics
from rlhf.lm.folders import load_model, save_adapter_folder, save_model
from rlhf.lm.lora import checkpointed, has_lora, with_lora
from rlhf.lm.memory import apply_memory
from rlhf.preferences.data import PairBatches, split_by_group
from rlhf.sft.config import SFTConfig
from rlhf.sft.data import SFTData, encode_rows, layout, pack_width, read_rows
from rlhf.sft.losses import sft_loss, token_hits

META_FILE = "sft.json"


def prepare(cfg: SFTConfig, tok) -> tuple[SFTData, SFTData, int]:
    """(2) -> (train, validation, records that gave no row)."""
    rows, other = read_rows(cfg.data.paths, cfg.data.split, cfg.data.columns)
    rows = rows[:cfg.data.max_rows] if cfg.data.max_rows else rows
    train_r, val_r = split_by_group(rows, cfg.data.val_fraction, cfg.runtime.seed)
    if len(train_r) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                          f"{len(train_r)} training rows")
    enc = [encode_rows(r, tok, cfg.data.max_len, cfg.data.completion_only)
           for r in (train_r, val_r)]
    return enc[0], enc[1], other


def forward(model, data: SFTData, idx: list[int], cfg: SFTConfig, pad_id: int, device):
    """Logits and the batch of rows `idx` (packed when `train.packing` and it pays:
    `pack_width`)."""
    pack_to = pack_width([len(data.ids[i]) for i in idx], cfg.data.max_len)
    b = layout(data, idx, pad_id, pack_to if cfg.train.packing else 0).to(device)
    with autocast(cfg.runtime, device):
        return model(b.tokens, **b.inputs()), b


def micro_batch(model, data: SFTData, idx: list[int], cfg: SFTConfig, pad_id: int, device,
                share: float) -> dict:
    """Loss and token accuracy of rows `idx`, both divided by `share`: the global batch's
    trained tokens / (micro-batches x processes), so that their means over micro-batches
    and ranks (`accumulated_step`) are the global batch's per-token figures."""
    logits, b = forward(model, data, idx, cfg, pad_id, device)
    return {"loss": sft_loss(logits, b.tokens, b.labels_mask, share),
            "accuracy": token_hits(logits, b.tokens, b.labels_mask) / share}


def validate(model, val: SFTData, cfg: SFTConfig, pad_id: int, device) -> dict:
    """Held-out mean NLL per trained token, greedy token accuracy, and the token count."""
    if not len(val):
        return {}
    nll = hits = 0.0
    n = val.targets(list(range(len(val))))
    with torch.no_grad():
        for s in range(0, len(val), cfg.train.eval_batch_size):
            idx = list(range(s, min(s + cfg.train.eval_batch_size, len(val))))
            logits, b = forward(model, val, idx, cfg, pad_id, device)
            nll += float(sft_loss(logits, b.tokens, b.labels_mask, 1.0))
            hits += float(token_hits(logits, b.tokens, b.labels_mask))
    return {"val_loss": nll / max(n, 1), "val_accuracy": hits / max(n, 1), "val_tokens": n}


def train(cfg: SFTConfig, hand: Handover | None = None) -> dict:
    """Fine-tune `model.init` on the rows `cfg.data` names; returns a summary (module
    docstring). `hand.start`: the model when the caller holds it (the loop), instead of
    `model.init`; `hand.trained` receives the trained one."""
    hand = hand or Handover()
    # 1. processes, seeds, run folder
    with training_run(cfg, "sft") as run:
        accum = accumulation(cfg.train.batch_size, cfg.train.micro_batch_size,
                             run.info.world_size)
        scale = accum * run.info.world_size  # micro-batch losses -> the global token mean
        # 2. data, split by group
        policy, tok = hand.start or load_model(cfg.model.init)
        train_d, val_d, other = prepare(cfg, tok)
        per_epoch = len(train_d) // cfg.train.batch_size
        total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
        # 3. model (LoRA: adapters on a frozen base, rlhf.lm.lora), optimiser, resume
        policy = with_lora(policy, cfg.model.lora)
        apply_memory(policy, cfg.model)  # checkpointing; frozen weights in bf16
        policy.to(run.device).train()
        model = dist.wrap(policy, run.info, cfg.runtime.parallel)
        opt = make_optimizer(policy, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
        run.resume({"policy": checkpointed(policy)}, {"opt": opt})  # LoRA: the adapters
        run.log.write(event="data", step=run.step, train_rows=len(train_d),
                      val_rows=len(val_d), truncated_rows=train_d.truncated + val_d.truncated,
                      records_without_rows=other, total_steps=total,
                      world_size=run.info.world_size)
        # 4. steps
        batches = PairBatches(train_d.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                              cfg.train.group_by_length)
        seen, t0 = 0, time.time()
        for step in run.steps(total, cfg.train.save_every, cfg.train.stop_at):
            lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
            set_lr(opt, lr)
            batch = batches(step)
            n = max(train_d.targets(batch), 1)  # the global batch's, on every rank
            m = accumulated_step(model, opt, batch, accum, lambda idx, share=n / scale:
                micro_batch(model, train_d, idx, cfg, tok.pad_id, run.device, share),
                cfg.train.max_grad_norm, run.info)
            seen += n
            row = {"step": step + 1, "lr": lr, **m, "tokens": n,
                   "tokens_per_s": seen / max(time.time() - t0, 1e-9)}
            run.validate(row, lambda: validate(policy, val_d, cfg, tok.pad_id, run.device),
                         cfg.train.eval_every)
            if run.end_step(row, show={"loss": m["loss"], "acc": m["accuracy"]}):
                return run.stopped()
        # 5. the policy (+ sft.json), summary
        hand.trained = (policy, tok)
        return run.finish(finish(cfg, policy, tok, train_d, val_d, run, total))


def finish(cfg: SFTConfig, policy, tok, train_d, val_d, run, total) -> dict:
    """(5) The policy folder with sft.json (`run.writes` ranks), the summary."""
    summary = {"policy": str(run.out / "policy"), "steps": total, "train_rows": len(train_d),
               "val_rows": len(val_d), "truncated_rows": train_d.truncated + val_d.truncated,
               "best_val_accuracy": run.best.get("val_accuracy"),
               "best_step": run.best.get("step")}
    if run.writes:
        policy.eval()
        meta = {"init": cfg.model.init, "data": list(cfg.data.paths), "trained_steps": total,
                "completion_only": cfg.data.completion_only, "max_len": cfg.data.max_len}
        save_model(policy, tok, run.out / "policy", extra_json={META_FILE: meta},
                   write=run.info.is_main)  # LoRA: merged
        if has_lora(policy):  # and the peft adapter folder
            summary["adapter"] = str(save_adapter_folder(
                policy, tok, run.out / "adapter", cfg.model.init, {META_FILE: meta},
                write=run.info.is_main))
        last = validate(policy, val_d, cfg, tok.pad_id, run.device)
        summary.update({f"last_{k}": v for k, v in last.items()})
        set_metrics(run.out / "policy", last, write=run.info.is_main)  # the model card's
    return summary


def cli(argv: list[str]) -> int:
    return stage_cli(SFTConfig, train, "rlhf train-sft", __doc__, argv)
