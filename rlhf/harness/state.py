"""Training states: resumable snapshots of a run, written atomically, never unpickled.

A state is a folder holding `tensors.safetensors` (module weights, optimiser moments, RNG
states, extra tensors) and `state.json` (everything else: step, data position, controllers,
and a SHA-256 checksum of every tensor). It is written to `state.tmp`, fsynced, and swapped in
with no window: `state` -> `state.old`, `state.tmp` -> `state`, the folder fsynced after each
rename. So at every instant `state` or `state.old` is a complete state; the previous one stays
as `state.old` (the fallback). A load takes the newest complete state (`state`, else
`state.old`), verifies every checksum, and on a damaged one falls back to `state.old`, saying
so; nothing to fall back to -> `StateError` naming the file. A state with a non-finite weight
is never written (`NonFiniteError`), so the last good one is kept. FSDP shards are gathered to
whole tensors, so a state loads anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlhf.config import UserError
from rlhf.harness.distributed import full_tensor, sharded_like


class StateError(UserError):
    """A training state that cannot be read or written (damaged, truncated, disk full)."""


class NonFiniteError(UserError):
    """Training produced a non-finite loss or weight; it stops, keeping the last good state."""


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def old_of(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def staging_dir(final: Path) -> Path:
    """An empty `<final>.tmp` beside `final`: a folder is written there whole, then moved into
    place by `replace_dir` (a leftover from a killed write is removed first)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path, keep_old: bool = False) -> None:
    """Move finished folder `tmp` to `final` with no window: `final` stays whole until it is
    `final.old`, removed once the new one is in place, or with `keep_old` kept (a training
    state's fallback) until the next swap. Durable: files, the new folder and the parent are
    fsynced."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    old = old_of(final)
    if final.exists():  # `final` is whole: the older `.old` may go
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        fsync_dir(final.parent)
    os.replace(tmp, final)  # (a kill before this line leaves `.old`, which resume finds)
    fsync_dir(final.parent)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def checksum(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def candidates(folder: Path) -> list[Path]:
    """The states a resume may use, newest first: `folder`, then `folder.old`."""
    return [f for f in (folder, old_of(folder)) if (f / "state.json").is_file()]


def has_state(folder: str | Path) -> bool:
    """Whether a resume has a state to start from (`folder` or `folder.old`)."""
    return bool(candidates(Path(folder)))


def state_meta(folder: str | Path) -> dict:
    """The `meta` of the state a resume would start from ({} when none; not verified)."""
    for f in candidates(Path(folder)):
        try:
            return json.loads((f / "state.json").read_text())["meta"]
        except (ValueError, KeyError, OSError):
            continue
    return {}


def read_verified(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state.json) of one state, every tensor checked against its checksum."""
    path = folder / "state.json"
    try:
        doc = json.loads(path.read_text())
        doc["meta"], doc["optimizers"], doc["rng"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise StateError(f"{path}: unreadable or damaged ({type(e).__name__}: {e})") from None
    file = folder / "tensors.safetensors"
    try:
        flat = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise StateError(f"{file}: unreadable or truncated ({e})") from None
    sums = doc.get("checksums")
    if sums is not None:  # (states written before checksums: not verified)
        if set(sums) != set(flat):
            raise StateError(f"{file}: holds other tensors than {path} lists")
        bad = [k for k, v in flat.items() if checksum(v) != sums[k]]
        if bad:
            raise StateError(f"{file}: tensor {bad[0]!r} does not match its checksum "
                             f"({len(bad)} damaged)")
    return flat, doc


def read_newest(folder: Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """The newest complete, verified state; falls back from a damaged one, saying so."""
    errors = []
    for cand in candidates(folder):
        try:
            flat, doc = read_verified(cand)
        except StateError as e:
            errors.append(str(e))
            continue
        if errors:
            print(f"warning: {errors[-1]}; resuming from the previous complete state {cand} "
                  f"(step {doc['meta'].get('step')}) instead", file=sys.stderr)
        return cand, flat, doc
    if not errors:
        raise StateError(f"{folder}: no training state to resume")
    raise StateError("; ".join(errors) + " (and no other complete state to fall back to)")


def require_finite(value: float, step: int, what: str, out: str | Path) -> None:
    """Stop training on a non-finite loss: the state saved before it is kept."""
    if not math.isfinite(value):
        raise NonFiniteError(f"step {step}: the {what} is {value}; training stopped, the last "
                             f"good state in {Path(out) / 'state'} is kept (a lower learning "
                             "rate, or check the data)")


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
    bad = [k for k, v in flat.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise NonFiniteError(f"step {meta.get('step')}: non-finite values in {bad[0]!r} "
                             f"({len(bad)} tensors); training stopped, the last good state "
                             f"in {folder} is kept")
    rng_t, rng_m = rng_state()
    flat.update(rng_t)
    flat.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()})
    doc = {"meta": meta, "optimizers": opt_meta, "rng": rng_m,
           "checksums": {k: checksum(v) for k, v in flat.items()}}
    write_state(folder, flat, doc)
    return folder


def write_state(folder: Path, flat: dict[str, torch.Tensor], doc: dict) -> None:
    """tensors.safetensors + state.json into `folder.tmp`, swapped in (`replace_dir`); a full
    or read-only disk -> StateError, the previous state untouched."""
    tmp = folder.with_name(folder.name + ".tmp")  # what staging_dir makes
    try:
        staging_dir(folder)
        save_file(flat, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(doc))
        replace_dir(tmp, folder, keep_old=True)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise StateError(f"{folder}: cannot write the training state ({why}); the previous "
                         "state is kept") from None


def load_state(folder: str | Path, modules: dict[str, torch.nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], restore_rng: bool = True
               ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore what `save_state` wrote (the newest complete, verified state: `folder`, else
    `folder.old`); returns (meta, extra tensors)."""
    folder, flat, doc = read_newest(Path(folder))
    if os.environ.get("RANK", "0") == "0" and "step" in doc["meta"]:
        print(f"resuming from {folder} (step {doc['meta']['step']})", file=sys.stderr)
    for name, m in modules.items():
        prefix = f"module.{name}."
        current = m.state_dict()
        sd = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        sd = {k: sharded_like(v, current[k]) if k in current else v for k, v in sd.items()}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        tied = {k for k in missing if k.endswith("output.weight")}
        if set(missing) - tied or unexpected:
            raise StateError(f"{folder}: state for {name!r} does not match the model "
                             f"(missing {sorted(set(missing) - tied)}, unexpected {unexpected})")
    for name, opt in optimizers.items():
        prefix = f"{name}."
        t = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix + "optim.")}
        optimizer_from_flat(opt, t, doc["optimizers"][name])
    if restore_rng:
        set_rng_state({k: v for k, v in flat.items() if k.startswith("rng.")}, doc["rng"])
    extra = {k[len("extra."):]: v for k, v in flat.items() if k.startswith("extra.")}
    return doc["meta"], extra
