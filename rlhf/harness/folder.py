"""A run folder's life: one run at a time, a resume only of what was started, a clean stop.

- Lock: `out_dir/.lock`, an advisory `fcntl.flock` held from the start of a stage to its end
  (re-entrant within a process: the loop and its stages nest). The kernel drops it when the
  process dies however it dies, so a lock file left by a dead process is stale and simply
  taken over (said in one line); a live holder -> `RunFolderBusy` naming its pid.
- Resume: the config of a resumed run is compared with the run's `config.yaml`; differing keys
  -> `ConfigChanged` listing them, except the keys of `SAFE_CHANGES` (run length and
  bookkeeping) and those the user allows (`rlhf --allow-changed KEY ...` or
  `RLHF_ALLOW_CHANGED=KEY,KEY`); each allowed change is printed and appended to
  `out_dir/config_changes.jsonl`.
- Signals: SIGINT and SIGTERM set a flag; the training loops finish their step, write a state
  and raise `Interrupted` (the CLI prints how to resume; exit 130 / 143). A second SIGINT exits
  at once (the last saved state stays whole: states are swapped in atomically).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import yaml

from rlhf.config import ConfigError, UserError, save_config, to_dict
from rlhf.harness import distributed as dist

SAFE_CHANGES = ("steps", "train.max_steps", "train.epochs", "train.stop_at", "rounds",
                "progress", "resume", "save_every", "train.save_every", "sample_every",
                "train.eval_every", "runtime.threads", "runtime.device", "runtime.parallel",
                "rater.poll_seconds", "runtime.report_to")
"""Keys a resumed run may change without being asked (how long it runs, how often it saves,
logs or shows progress and to which trackers, where it runs: a state loads on any device
and process count); printed and logged like the allowed ones. A key matches a longer one
it ends (`steps` matches the loop's `rl.steps`)."""


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


class ConfigChanged(ConfigError):
    """A resume with settings that differ from the run's saved config.yaml."""


class Interrupted(UserError):
    """SIGINT / SIGTERM: the step was finished and the state saved; `code` is the exit code."""

    def __init__(self, signum: int, where: str):
        self.code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; the state is "
                         "saved: run the same command again to resume")


# ----------------------------------------------------------------------------- the lock

_held: dict[str, list] = {}  # resolved folder -> [fd, depth]


def lock(out: Path) -> None:
    """Take `out/.lock` (re-entrant); a live holder -> RunFolderBusy naming its pid."""
    key = str(out.resolve())
    if key in _held:
        _held[key][1] += 1
        return
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderBusy(f"{out} is in use by another run ({holder}); wait for it to end "
                            "or choose another out_dir") from None
    before = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if before:
        print(f"note: {path}: stale lock of a process that ended ({before}); taken over",
              file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    _held[key] = [fd, 1]


def unlock(out: Path) -> None:
    """Release one `lock` of `out`; the last one empties the file and drops the lock."""
    key = str(out.resolve())
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] == 0:
        fd = _held.pop(key)[0]
        os.ftruncate(fd, 0)  # an empty lock file: a clean end, nothing stale
        os.close(fd)


# ----------------------------------------------------------------------------- signals

_signal: dict = {"got": 0, "depth": 0, "saved": {}}


def _on_signal(signum, frame) -> None:
    if _signal["got"] and signum == signal.SIGINT:
        print("rlhf: second interrupt: exiting now; the last saved state is kept",
              file=sys.stderr, flush=True)
        os._exit(130)
    _signal["got"] = _signal["got"] or signum
    print(f"rlhf: {signal.Signals(signum).name}: finishing the current step, then saving the "
          "state (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)


def catch_signals() -> None:
    """Install the SIGINT/SIGTERM flag (re-entrant; the main thread only)."""
    if _signal["depth"] == 0:
        try:
            _signal["saved"] = {s: signal.signal(s, _on_signal)
                                for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            _signal["saved"] = {}
        _signal["got"] = 0
    _signal["depth"] += 1


def release_signals() -> None:
    _signal["depth"] -= 1
    if _signal["depth"] == 0:
        for s, h in _signal["saved"].items():
            signal.signal(s, h)
        _signal["saved"] = {}


def signal_received() -> int:
    """The signal that asked this process to stop (0: none); local, no collective: for a wait
    on one rank (people rating) that must end when asked."""
    return _signal["got"]


def stop_signal(info: dist.DistInfo) -> int:
    """The signal that asked this run to stop (0: none); the same on every rank."""
    got = _signal["got"]
    if info.enabled:  # a collective: every rank calls it at the same point of its loop
        anyone = dist.all_reduce_mean(torch.tensor(float(got > 0), device=info.device), info)
        got = (got or int(signal.SIGTERM)) if float(anyone) > 0 else 0
    return got


@contextlib.contextmanager
def held_folder(out: Path, main: bool):
    """The run folder `out` created and locked (by rank 0, `main`) and SIGINT/SIGTERM caught
    for the block; released on any exit."""
    if main:
        out.mkdir(parents=True, exist_ok=True)
        lock(out)
    catch_signals()
    try:
        yield out
    finally:
        release_signals()
        if main:
            unlock(out)


# ----------------------------------------------------------------------------- the saved config


def flat_keys(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[prefix + str(k)] = v
    return out


def _matches(key: str, names) -> bool:
    return any(key == n or key.endswith("." + n) or n.endswith("." + key) for n in names)


def allowed_changes() -> list[str]:
    return [k.strip() for k in os.environ.get("RLHF_ALLOW_CHANGED", "").split(",") if k.strip()]


def save_run_config(cfg, out: Path, resuming: bool) -> None:
    """Write `out/config.yaml`; when resuming, first refuse keys that differ from the saved
    one (except safe and allowed ones, which are printed and logged)."""
    saved_path = out / "config.yaml"
    if resuming and saved_path.is_file():
        try:
            saved = flat_keys(yaml.safe_load(saved_path.read_text()))
        except yaml.YAMLError as e:
            raise ConfigError(f"{saved_path}: not valid YAML: {e}") from None
        new = flat_keys(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
        diff = {k: (saved.get(k), new.get(k)) for k in sorted(set(saved) | set(new))
                if saved.get(k) != new.get(k)}
        refused = [k for k in diff if not _matches(k, (*SAFE_CHANGES, *allowed_changes()))]
        if refused:
            shown = ", ".join(f"{k} ({diff[k][0]!r} -> {diff[k][1]!r})" for k in refused[:6])
            raise ConfigChanged(f"{out}: resuming with settings that differ from "
                                f"{saved_path}: {shown}; use the saved values, another "
                                "out_dir, or `rlhf --allow-changed KEY ...` to resume anyway")
        with open(out / "config_changes.jsonl", "a") as f:
            for k, (a, b) in diff.items():
                print(f"note: resuming {out} with {k} changed: {a!r} -> {b!r}", file=sys.stderr)
                f.write(json.dumps({"key": k, "saved": a, "now": b, "time": time.time()}) + "\n")
    save_config(cfg, saved_path)


def run_value(path: Path, fresh: bool, compute, write: bool = True):
    """A figure of the whole run (e.g. the evaluation before the first step): computed on a
    fresh start and kept in `path`, read back by every resume (None if it was never kept)."""
    if fresh:
        value = compute()
        if write:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(value))
            os.replace(tmp, path)
        return value
    return json.loads(path.read_text()) if path.is_file() else None
