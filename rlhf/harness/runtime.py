"""Process set-up shared by every stage: threads, seeds, device, precision, run folders."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from rlhf.config import ConfigError, RuntimeConfig
from rlhf.harness.trackers import Trackers


def setup(cfg: RuntimeConfig) -> torch.device:
    """Apply threads and seeds; return the device to run on."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return pick_device(cfg.device)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_bf16(cfg: RuntimeConfig, device: torch.device) -> bool:
    """precision 'bf16', or 'auto' on a CUDA device that supports bf16."""
    if cfg.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.precision == "bf16"


def autocast(cfg: RuntimeConfig, device: torch.device):
    """bf16 autocast where `use_bf16` says so; else a no-op."""
    if use_bf16(cfg, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (flushed each write), and passes
    each row on to the trackers of `report_to` (`rlhf.harness.trackers`; step = its `step`),
    in the same folder. Disabled (ranks other than 0): writes nothing anywhere."""

    def __init__(self, path: str | Path, enabled: bool = True, report_to=()):
        self.path = Path(path)
        self.enabled = enabled
        self.t0 = time.time()
        self.trackers = Trackers(report_to if enabled else (), self.path.parent)

    def write(self, **row) -> None:
        if not self.enabled:
            return
        row = {k: (v.item() if torch.is_tensor(v) else v) for k, v in row.items()}
        row.setdefault("time", round(time.time() - self.t0, 3))
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
        except OSError as e:  # a full disk's ENOSPC names no file: name it
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.trackers.log(row, int(row.get("step", 0)))

    def close(self) -> None:
        """Close the trackers (the file is closed after every write)."""
        self.trackers.close()

    def first_last(self, key: str) -> tuple:
        """The first and last logged values of `key` (the whole run's, across resumes)."""
        if not self.path.is_file():
            return None, None
        values = [r[key] for r in map(json.loads, self.path.read_text().splitlines())
                  if key in r]
        return (values[0], values[-1]) if values else (None, None)

    def truncate_after(self, step: int, key: str = "step") -> None:
        """On (re)start: drop rows logged after the checkpoint's step (they will be redone;
        all of them on a fresh start), and a last row a kill left half-written. Rank 0 only."""
        self.trackers.resumed_at(step)
        if not self.enabled or not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if (row := _parsed(r)) is not None and row.get(key, -1) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(r + "\n" for r in kept))
        os.replace(tmp, self.path)


def _parsed(line: str) -> dict | None:
    """A metrics row, or None for one a kill cut short."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None
