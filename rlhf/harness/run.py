"""One training run's bookkeeping, written once for every trainer: what a stage's `train(cfg)`
calls around its own loop. Not a base class and no callbacks: a context manager and a few
methods, so each `train` still reads top to bottom as the numbered steps of its method.

    with training_run(cfg, "dpo") as run:             # processes, seeds, run folder, signals
        ...data, model, optimiser (the method's own)...
        meta = run.resume({"policy": policy}, {"opt": opt})    # the saved state, if any
        for step in run.steps(total, cfg.train.save_every, cfg.train.stop_at):
            row = {"step": step + 1, ...one step of the method...}
            run.validate(row, lambda: held_out_figures())       # every eval_every steps
            if run.end_step(row, show={"loss": row["loss"]}):  # log, bar, checkpoint, stop
                return run.stopped()
        ...save the trained model (on `run.writes` ranks)...
        return run.finish(summary)

What each part guarantees:
- `training_run`: torchrun processes joined, threads and seeds set, the run folder created and
  locked (one run per folder, `rlhf.harness.folder`), its resolved `config.yaml` written, or,
  resuming, compared with the saved one (a changed key is refused); SIGINT/SIGTERM caught for
  the run (the step in progress finishes, the state is saved, `Interrupted` is raised).
- `resume`: the newest complete, checksummed state restored exactly (weights, optimiser
  moments, RNG states, best validation so far) and `metrics.jsonl` cut back to its step.
- `end_step`: a non-finite loss stops the run (the last good state is kept); the row goes to
  `metrics.jsonl` and the progress bar; the state is saved every `save_every` steps, at the
  end, at `stop_at`, and when a signal asked the run to stop.
- Distributed: rank 0 writes; under FSDP every rank gathers the shards for a checkpoint
  (`writes`), and validation runs on every rank (forward passes are collective).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError, parse_cli
from rlhf.harness import distributed as dist
from rlhf.harness.folder import Interrupted, held_folder, save_run_config, stop_signal
from rlhf.harness.optim import clip_gradients
from rlhf.harness.progress import Progress
from rlhf.harness.runtime import MetricsLog, setup
from rlhf.harness.state import has_state, load_state, require_finite, save_state


@contextlib.contextmanager
def training_run(cfg, name: str):
    """(1) of every trainer: processes, threads and seeds, the locked run folder with its
    config (refused when a resume changes it), signals caught; released on any exit.
    `cfg` has `out_dir`, `resume`, `progress` and `runtime`; `name` labels the progress."""
    info = dist.init(cfg.runtime.device)
    setup(cfg.runtime)
    out = Path(cfg.out_dir)
    with held_folder(out, info.is_main):
        if info.is_main:
            save_run_config(cfg, out, resuming=cfg.resume and has_state(out / "state"))
        run = TrainingRun(cfg, name, info, out, MetricsLog(out / "metrics.jsonl",
                                                           enabled=info.is_main,
                                                           report_to=cfg.runtime.report_to))
        try:
            yield run
        finally:
            run.close()


def stage_cli(config_cls, train, prog: str, doc: str, argv: list[str]) -> int:
    """A stage's command (`rlhf train-reward`, ...): its config from YAML (`CONFIG.yaml` or
    `--config CONFIG.yaml`, `rlhf.config.parse_cli`, as every command with a config) and
    `key=value` overrides, `train(cfg)`, the summary printed as one JSON line by rank 0. The
    processes end in `rlhf.cli.main` (`rlhf.harness.distributed.finish`)."""
    cfg = parse_cli(config_cls, prog, doc, argv)
    summary = train(cfg)
    if dist.init(cfg.runtime.device).is_main:
        print(json.dumps(summary))
    return 0


@dataclass
class Handover:
    """Models a caller (the loop) already holds in memory, handed to a stage instead of the
    folders it would load, and what the stage trained, handed back: so a round of the loop
    reads from disk only what it does not have (after a restart: everything once)."""

    start: tuple | None = None
    """(model, tokenizer) to start training from, instead of loading the config's init."""
    reference: Any = None
    """The frozen reference policy (policy training, DPO), instead of loading it."""
    reward: tuple | None = None
    """(reward model, tokenizer) that policy training optimises, instead of loading it."""
    trained: tuple | None = None
    """Out: the (model, tokenizer) the stage trained, as it was saved."""


@dataclass
class TrainingRun:
    """A run in progress: where it is (`step`), what its checkpoints hold, its logs."""

    cfg: Any
    name: str
    info: dist.DistInfo
    out: Path
    log: MetricsLog
    step: int = 0
    """Optimiser steps done (after `resume`: the saved state's)."""
    best: dict = field(default_factory=lambda: {"val_accuracy": float("nan")})
    """The best validation figure so far and its step (kept in every checkpoint)."""
    modules: dict = field(default_factory=dict)
    optimizers: dict = field(default_factory=dict)
    total: int = 0
    save_every: int = 0
    stop_at: int = 0
    bar: Progress | None = None
    started: tuple[float, int] = (0.0, 0)  # (time, step) this process began stepping

    @property
    def device(self):
        return self.info.device

    @property
    def state_dir(self) -> Path:
        return self.out / "state"

    @property
    def sharded(self) -> bool:
        """A registered module is FSDP-sharded: forward passes and saves are collective."""
        return any(dist.is_sharded(m) for m in self.modules.values())

    @property
    def writes(self) -> bool:
        """This rank takes part in writing a model or state: rank 0, or every rank under FSDP
        (they gather the shards; rank 0 alone writes the files)."""
        return self.info.is_main or self.sharded

    def resume(self, modules: dict, optimizers: dict) -> dict:
        """Register what a checkpoint holds (names -> modules / optimisers). When `cfg.resume`
        and the run folder has a state: restore it (weights, moments, RNG, best) and return
        its meta ({} on a fresh start). Metrics rows after its step are dropped (they are
        redone; all of them on a fresh start)."""
        self.modules, self.optimizers = modules, optimizers
        meta: dict = {}
        if self.cfg.resume and has_state(self.state_dir):
            meta, _ = load_state(self.state_dir, modules, optimizers)
        self.step = meta.get("step", 0)
        self.best = meta.get("best", self.best)
        self.log.truncate_after(self.step)
        return meta

    def steps(self, total: int, save_every: int, stop_at: int = 0) -> range:
        """The steps left of `total`, `range(step, total)`; the progress bar (rank 0) and the
        checkpoint cadence: every `save_every` steps (0: only at the end), and a stop with a
        checkpoint after step `stop_at` (0: none)."""
        self.total, self.save_every, self.stop_at = total, save_every, stop_at
        self.bar = Progress(self.name, total, self.step,
                            enabled=self.info.is_main and self.cfg.progress)
        self.started = (time.time(), self.step)
        return range(self.step, total)

    def per_second(self, done: int, items_per_step: int) -> float:
        """Items (pairs, prompts) per second since this process started stepping, `done`
        steps being done."""
        t0, n0 = self.started
        return (done - n0) * items_per_step / max(time.time() - t0, 1e-9)

    def validate(self, row: dict, figures, every: int, key: str = "val_accuracy") -> None:
        """Every `every` steps (0: only the last) and at the last: `figures()` (held-out
        metrics, prefixed `val_`) into `row`, on rank 0 (every rank under FSDP); `best` keeps
        the best `key` so far. Other ranks wait."""
        done = row["step"]
        if not ((every and done % every == 0) or done == self.total):
            return
        if self.writes:
            row.update(figures())
            value = row.get(key, float("nan"))
            if not self.best[key] >= value:  # also replaces nan
                self.best = {key: value, "step": done}
        dist.barrier(self.info)

    def end_step(self, row: dict, meta: dict | None = None, show: dict | None = None,
                 finite: str = "loss") -> bool:
        """After step `row["step"]`: the row to metrics.jsonl and `show` to the bar; a
        non-finite `row[finite]` stops training (`NonFiniteError`; the last good state is
        kept); the state (with `meta`) saved when due; when SIGINT/SIGTERM asked the run to
        stop, `Interrupted` once it is saved. True when the run stops here at `stop_at`."""
        self.step = done = row["step"]
        self.log.write(**row)
        self.bar.update(**(show or {}))
        require_finite(row[finite], done, finite, self.out)
        stop = bool(self.stop_at) and self.stop_at <= done < self.total
        sig = stop_signal(self.info)  # the same on every rank
        if sig or stop or done == self.total or (self.save_every and done % self.save_every == 0):
            self.save(meta)
        if sig and done < self.total:
            raise Interrupted(sig, f"after step {done} of {self.out}")
        return stop

    def save(self, meta: dict | None = None) -> None:
        """A checkpoint after `step` of the registered modules and optimisers, with `meta`
        (FSDP: every rank gathers, rank 0 writes); every rank waits for it."""
        if self.writes:
            save_state(self.state_dir, self.modules, self.optimizers,
                       {"step": self.step, "best": self.best, "world_size": self.info.world_size,
                        "sharded": self.sharded, **(meta or {})}, write=self.info.is_main)
        dist.barrier(self.info)

    def stopped(self) -> dict:
        """The summary of a run that left at `stop_at` (its state saved)."""
        self.close()
        return {"stopped_at": self.step, "steps": self.total, "state": str(self.state_dir)}

    def finish(self, summary: dict) -> dict:
        """The end of a run: the bar closed, `summary.json` written (rank 0), ranks in step."""
        self.close()
        if self.info.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        dist.barrier(self.info)
        return summary

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()  # the trackers (rlhf.harness.trackers)


# ----------------------------------------------------------------------------- one step


def accumulation(batch_size: int, micro_batch_size: int, world: int) -> int:
    """Micro-batches per step on each process of a global batch of `batch_size` (0 micro =
    one per process); a ConfigError naming the key when the sizes do not divide."""
    if batch_size % world:
        raise ConfigError(f"train.batch_size: {batch_size} does not divide over {world} "
                          "processes")
    per_rank = batch_size // world
    micro = micro_batch_size or per_rank
    if per_rank % micro:
        raise ConfigError(f"train.micro_batch_size: {micro} does not divide the "
                          f"{per_rank} examples per process")
    return per_rank // micro


def accumulated_step(model, opt, batch: list[int], accum: int, micro_batch, max_grad_norm: float,
                     info: dist.DistInfo) -> dict:
    """One optimiser step on this rank's shard (`dist.shard`) of the global `batch`, in
    `accum` micro-batches: `micro_batch(idx)` -> {"loss": differentiable mean, other
    figures: 0-d tensors}. Gradients are synchronised over ranks on the last micro-batch only,
    clipped to `max_grad_norm`, and applied; returns the figures' means over micro-batches and
    ranks (equal shards: the global mean), and the pre-clip gradient norm."""
    mine = dist.shard(batch, info)
    micro = len(mine) // accum
    sums: dict = {}
    for k in range(accum):
        idx = mine[k * micro:(k + 1) * micro]
        with dist.no_grad_sync(model, skip=k < accum - 1):  # reduce on the last one only
            m = micro_batch(idx)
            (m["loss"] / accum).backward()
        for key, v in m.items():
            sums[key] = sums.get(key, 0.0) + v.detach() / accum
    gnorm = clip_gradients(model, max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    out = {k: float(dist.all_reduce_mean(v, info)) for k, v in sums.items()}
    return {**out, "grad_norm": float(dist.full_tensor(gnorm))}
