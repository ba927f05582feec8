"""`rlhf train-kto CONFIG [overrides]`: fine-tune a policy on completions judged desirable or
undesirable one at a time (KTO, Ethayarajh et al. 2024): thumbs up/down, ratings, "both bad"
comparisons, a TRL unpaired file; no pairs, no reward model.

One loop (`train`), read top to bottom:
1. processes (torchrun: one per rank), seeds, the run folder (`rlhf.harness.run`);
2. data (`rlhf.kto.data`): stores / data files -> unpaired rows -> split *by prompt* -> tokens;
3. the policy and its frozen reference (`model.reference`, '' = the start model), held in
   memory: the reference point needs the reference's log-probs of each batch's mismatched
   pairs, which change with the batch;
4. policy (DDP replica or FSDP shards), AdamW, resume from `state/`;
5. steps: the global batch of step s is a pure function of (seed, s) (`PairBatches`); each
   rank takes its shard, cut into micro-batches; per micro-batch, the log-ratios
   h = log pi(y|x) - log pi_ref(y|x) of its rows, and the reference point: the mean log-ratio
   of its mismatched pairs (x_i, y_{i-1}) (no gradient), averaged over ranks, clamped at 0,
   as TRL's `KTOTrainer` does per device batch; loss = mean of
   `rlhf.preferences.losses.kto_loss`; validation every `eval_every`;
6. the policy folder (+ kto.json: reference, beta, weights), summary.json.

Metrics per step: loss, kl (the reference point before clamping), accuracy (rows whose
h - z0 has their label's sign), reward_desirable / reward_undesirable (mean beta h of each
label's rows, 0 where a micro-batch has none), grad_norm, rows_per_s.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rlhf.config import ConfigError
from rlhf.harness import distributed as dist
from rlhf.harness.optim import lr_at, make_optimizer, set_lr
from rlhf.harness.run import Handover, accumulated_step, accumulation, stage_cli, training_run
from rlhf.harness.runtime import autocast
from rlhf.kto.config import KTOTrainConfig
from rlhf.kto.data import completion_logprobs, mismatched, prepare_rows
from rlhf.lm.cards import held_out, set_metrics
from rlhf.lm.folders import adapter_base, load_model, save_adapter_folder, save_model
from rlhf.lm.lora import checkpointed, has_lora, shared_reference, with_lora
from rlhf.lm.memory import apply_memory
from rlhf.preferences.data import PairBatches
from rlhf.preferences.losses import kto_loss

META_FILE = "kto.json"


def kto_terms(model, ref, data, idx: list[int], cfg: KTOTrainConfig, device):
    """Rows `idx`: their log-ratios h (B,) (differentiable when grad is on), the mean log-ratio
    of their mismatched pairs () (no gradient; unclamped, this rank's), their labels (B,)."""
    ctx = [data.context[i] for i in idx]
    comp = [data.completion[i] for i in idx]
    mis = [comp[j] for j in mismatched(len(idx))]
    with torch.no_grad(), autocast(cfg.runtime, device):
        ref_lp = completion_logprobs(ref, ctx + ctx, comp + mis, device)  # (2B,)
        kl = (completion_logprobs(model, ctx, mis, device) - ref_lp[len(idx):]).mean()
    with autocast(cfg.runtime, device):
        h = completion_logprobs(model, ctx, comp, device) - ref_lp[:len(idx)]  # (B,)
    return h, kl, data.label[idx].to(device)


def figures(h, kl, labels, cfg: KTOTrainConfig) -> dict:
    """The loss (mean over rows) and the per-step figures of the module docstring."""
    lo = cfg.loss
    loss = kto_loss(h, labels, kl, lo.beta, lo.desirable_weight, lo.undesirable_weight).mean()
    r, d = lo.beta * h.detach(), labels.to(h.dtype)
    right = ((h.detach() - kl.clamp(min=0)) > 0) == labels
    return {"loss": loss, "kl": kl, "accuracy": right.to(h.dtype).mean(),
            "reward_desirable": (r * d).sum() / d.sum().clamp(min=1),
            "reward_undesirable": (r * (1 - d)).sum() / (1 - d).sum().clamp(min=1)}


def micro_batch(model, ref, data, idx, cfg, info) -> dict:
    h, kl, labels = kto_terms(model, ref, data, idx, cfg, info.device)
    return figures(h, dist.all_reduce_mean(kl, info), labels, cfg)


@torch.no_grad()
def validate(policy, ref, val, cfg: KTOTrainConfig, device) -> dict:
    """Held-out figures over chunks of about `eval_batch_size` rows (each its own reference
    point), weighted by chunk size."""
    if len(val) < 2:
        return {}
    chunks = torch.arange(len(val)).tensor_split(math.ceil(len(val) / cfg.train.eval_batch_size))
    out: dict = {}
    for c in chunks:
        m = figures(*kto_terms(policy, ref, val, c.tolist(), cfg, device), cfg)
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + float(v) * len(c) / len(val)
    return {f"val_{k}": v for k, v in out.items()}


def train(cfg: KTOTrainConfig, hand: Handover | None = None) -> dict:
    """Train a policy on unpaired rows as `cfg` says; returns a summary (module docstring).
    `hand`: the policy / reference when the caller holds them; `hand.trained` receives it."""
    hand = hand or Handover()
    with training_run(cfg, "kto") as run:  # 1. processes, seeds, run folder
        accum = accumulation(cfg.train.batch_size, cfg.train.micro_batch_size,
                             run.info.world_size)
        if cfg.train.batch_size // run.info.world_size // accum < 2 or \
                cfg.train.eval_batch_size < 2:
            raise ConfigError("train.micro_batch_size: KTO needs at least 2 rows per forward "
                              "pass (the reference point pairs each row with another's "
                              "completion); eval_batch_size too")
        policy, tok = hand.start or load_model(cfg.model.init)  # 2. data, split by prompt
        train_d, val_d = prepare_rows(cfg, tok)
        total = cfg.train.max_steps or max(1, math.ceil(
            cfg.train.epochs * (len(train_d) // cfg.train.batch_size)))
        policy = with_lora(policy, cfg.model.lora)  # 3. LoRA: adapters, frozen base; then the
        ref = (hand.reference or shared_reference(policy, cfg.model.reference)  # base is ref
               or load_model(cfg.model.reference or cfg.model.init)[0])
        apply_memory(ref.requires_grad_(False), cfg.model)  # bf16 when model.dtype says
        apply_memory(policy, cfg.model)  # checkpointing; frozen weights in bf16
        ref.to(run.device).eval().requires_grad_(False)
        policy.to(run.device).train()  # 4. policy, optimiser, resume
        model = dist.wrap(policy, run.info, cfg.runtime.parallel)
        opt = make_optimizer(policy, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
        run.resume({"policy": checkpointed(policy)}, {"opt": opt})  # LoRA: the adapters
        n_d = int(train_d.label.sum())
        lo = cfg.loss
        run.log.write(event="data", step=run.step, train_rows=len(train_d),
                      val_rows=len(val_d), desirable=n_d, undesirable=len(train_d) - n_d,
                      weight_ratio=lo.desirable_weight * n_d / max(
                          lo.undesirable_weight * (len(train_d) - n_d), 1e-9),
                      truncated_rows=train_d.truncated + val_d.truncated, total_steps=total,
                      world_size=run.info.world_size, beta=lo.beta)
        batches = PairBatches(train_d.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                              cfg.train.group_by_length)
        for step in run.steps(total, cfg.train.save_every, cfg.train.stop_at):  # 5. steps
            lr = lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr_ratio)
            set_lr(opt, lr)
            m = accumulated_step(model, opt, batches(step), accum, lambda idx: micro_batch(
                model, ref, train_d, idx, cfg, run.info), cfg.train.max_grad_norm, run.info)
            row = {"step": step + 1, "lr": lr, **m,
                   "rows_per_s": run.per_second(step + 1, cfg.train.batch_size)}
            run.validate(row, lambda: validate(policy, ref, val_d, cfg, run.device),
                         cfg.train.eval_every)
            if run.end_step(row, show={"loss": m["loss"], "kl": m["kl"]}):
                return run.stopped()
        hand.trained = (policy, tok)  # 6. the policy (+ kto.json), summary
        return run.finish(finish(cfg, policy, tok, train_d, val_d, run, total))


def finish(cfg, policy, tok, train_d, val_d, run, total) -> dict:
    """(6) The policy folder with kto.json (`run.writes` ranks), the summary."""
    reference = str(Path(cfg.model.reference or (adapter_base(cfg.model.init) if has_lora(
        policy) else cfg.model.init)).resolve())  # LoRA: the base, adapters off
    meta = {"reference": reference, "beta": cfg.loss.beta, "loss": "kto",
            "desirable_weight": cfg.loss.desirable_weight,
            "undesirable_weight": cfg.loss.undesirable_weight, "max_len": cfg.data.max_len,
            "trained_steps": total}
    summary = {"policy": str(run.out / "policy"), "steps": total, "train_rows": len(train_d),
               "val_rows": len(val_d), "desirable": int(train_d.label.sum()),
               "truncated_rows": train_d.truncated + val_d.truncated, **meta,
               "best_val_accuracy": run.best.get("val_accuracy"),
               "best_step": run.best.get("step")}
    if run.writes:
        policy.eval()
        save_model(policy, tok, run.out / "policy", extra_json={META_FILE: meta},
                   write=run.info.is_main, card={"base_model": cfg.model.init,
                                                 "data": list(cfg.data.paths)})  # LoRA: merged
        set_metrics(run.out / "policy", held_out(run.log.path), write=run.info.is_main)
        if has_lora(policy):
            summary["adapter"] = str(save_adapter_folder(
                policy, tok, run.out / "adapter", cfg.model.init, {META_FILE: meta},
                write=run.info.is_main))
    return summary


def cli(argv: list[str]) -> int:
    return stage_cli(KTOTrainConfig, train, "rlhf train-kto", __doc__, argv)
