"""Training states: resumable snapshots of a run, written atomically, never unpickled.

A state is a folder holding `tensors.safetensors` (module weights, optimiser moments, RNG
states, extra tensors) and `state.json` (everything else: step, data position, controllers),
written to a temporary folder and renamed into place, so a crash never leaves a half-written
checkpoint. FSDP shards are gathered to whole tensors, so a state loads anywhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhf.distributed import full_tensor, sharded_like


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; the old one is removed only after."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG's state, split into tensors and JSON (no pickling)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as full tensors (FSDP shards gathered: collective) and JSON."""
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = full_tensor(v).detach().cpu().contiguous()
            else:
                state_meta[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": state_meta}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of `optimizer_to_flat`; state of an FSDP-sharded parameter is sharded alike."""
    params = [p for group in opt.param_groups for p in group["params"]]  # state ids' order
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            p = params[int(pid)]
            state.setdefault(int(pid), {})[name] = (sharded_like(v, p) if v.shape == p.shape
                                                    else v)
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(folder: str | Path, modules: dict[str, torch.nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], meta: dict,
               tensors: dict[str, torch.Tensor] | None = None, write: bool = True) -> Path:
    """Atomically write a resumable training state: module weights, optimiser states,
    RNG states, extra tensors and a JSON-able `meta` (step, data position, controllers...).
    Always full tensors: FSDP shards are gathered, so every rank calls this for a sharded
    model, rank 0 with `write`."""
    folder = Path(folder)
    flat: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        seen: set[int] = set()
        for k, v in m.state_dict(keep_vars=True).items():
            if id(v) in seen:  # tied weights (one Parameter under two names) are stored once
                continue
            seen.add(id(v))
            flat[f"module.{name}.{k}"] = full_tensor(v.detach()).cpu().contiguous()
    opt_meta = {}
    for name, opt in optimizers.items():
        t, m = optimizer_to_flat(opt)
        flat.update({f"{name}.{k}": v for k, v in t.items()})
        opt_meta[name] = m
    if not write:
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng_t, rng_m = rng_state()
    flat.update(rng_t)
    flat.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()})
    save_file(flat, str(tmp / "tensors.safetensors"))
    doc = {"meta": meta, "optimizers": opt_meta, "rng": rng_m}
    (tmp / "state.json").write_text(json.dumps(doc))
    replace_dir(tmp, folder)
    return folder


def load_state(folder: str | Path, modules: dict[str, torch.nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], restore_rng: bool = True
               ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore what `save_state` wrote; returns (meta, extra tensors)."""
    folder = Path(folder)
    flat = load_file(str(folder / "tensors.safetensors"))
    doc = json.loads((folder / "state.json").read_text())
    for name, m in modules.items():
        prefix = f"module.{name}."
        current = m.state_dict()
        sd = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        sd = {k: sharded_like(v, current[k]) if k in current else v for k, v in sd.items()}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        tied = {k for k in missing if k.endswith("output.weight")}
        if set(missing) - tied or unexpected:
            raise ValueError(f"{folder}: state for {name!r} does not match the model "
                             f"(missing {sorted(set(missing) - tied)}, unexpected {unexpected})")
    for name, opt in optimizers.items():
        prefix = f"{name}."
        t = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix + "optim.")}
        optimizer_from_flat(opt, t, doc["optimizers"][name])
    if restore_rng:
        set_rng_state({k: v for k, v in flat.items() if k.startswith("rng.")}, doc["rng"])
    extra = {k[len("extra."):]: v for k, v in flat.items() if k.startswith("extra.")}
    return doc["meta"], extra
