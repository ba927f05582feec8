"""Fault injection: kill reward training, DPO, policy training and the loop at random moments,
resume, and check that the result is bit-identical to an uninterrupted run.

    python benchmarks/fault_injection.py            # N=20 kills per stage (a few minutes)
    python benchmarks/fault_injection.py --kills 5 --seed 1

Per stage: one uninterrupted reference run (a subprocess, timed), then chains of the same
command, each killed up to --per-chain times after a random delay (uniform between the
process start and the reference's duration), then run to its end. Three kills in four are
SIGKILL (nothing can be saved: the resume must use the last atomic state), one in four SIGTERM
(the stage must finish its step, save, print how to resume and exit 143; one that lands
before the stage has begun, during Python's start, just ends the process: counted apart).
Each restart is checked for a silent restart: every stage folder holding a state before the
restart whose stage runs again must print `resuming from <that state> (step N)` with N at
least the saved step (the loop: `resuming <out_dir>: round r, ...`). At the end of a chain every
*.safetensors file of the run folder (states aside) is compared bit for bit with the
reference's, and so are the logged losses / rewards and the loop's per-round evaluations.

Prints one JSON line: kills, resumes, mismatches, silent_restarts, bad_sigterm (a SIGTERM that
did not end in a clean 143 with its line), per-stage figures, seconds, the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STORIES = SHARED / "models" / "stories260K"
WORDS = "the cat dog sun tree ran big red blue sat".split()
PROMPTS = ["Once upon a time", "One day, a cat", "Tom had a ball", "The sun was up",
           "Lily saw a dog", "A bird sang", "Mom made a cake", "The boy ran"]
LOOP = ["rounds=2", "pairs_per_round=8", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12",
        "reward.train.batch_size=4", "reward.train.epochs=1", "reward.model.n_members=2",
        "reward.data.val_fraction=0.25", "rl.steps=3", "rl.save_every=1",
        "rl.prompts.batch_prompts=2", "rl.algo.k=2", "selection=disagreement", "oversample=2"]


def fixtures(tmp: Path) -> dict[str, list[str]]:
    """The four commands' arguments (without out_dir), on tiny random models."""
    sys.path.insert(0, str(ROOT))
    from rlhf.feedback.records import Comparison
    from rlhf.feedback.store import ComparisonStore
    from rlhf.lm.folders import save_model
    from rlhf.lm.model import ModelArgs, Transformer
    from rlhf.lm.tokenizer import Llama2cTokenizer

    tok = Llama2cTokenizer(STORIES / "tok512.bin")
    torch.manual_seed(0)
    backbone = save_model(Transformer(ModelArgs(dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                                                n_kv_heads=2, vocab_size=512, max_seq_len=64)),
                          tok, tmp / "backbone")
    policy = save_model(Transformer(ModelArgs(dim=16, hidden_dim=32, n_layers=2, n_heads=2,
                                              n_kv_heads=1, vocab_size=512, max_seq_len=64)),
                        tok, tmp / "policy")
    rng = random.Random(0)

    def resp(word):
        xs = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        xs.insert(rng.randint(0, len(xs)), word)
        return " " + " ".join(xs)

    comps = []
    for i in range(200):
        a, b, label = resp("happy"), resp("sad"), "a"
        if rng.random() < 0.5:
            a, b, label = b, a, "b"
        comps.append(Comparison(item_id=str(i), prompt=" ".join(rng.sample(WORDS, 3)), a=a,
                                b=b, label=label, group=f"g{i % 100}"))
    ComparisonStore(tmp / "store.jsonl").extend(comps)
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {
        "reward": ["train-reward", f"model.init={backbone}", f"data.paths=[{tmp / 'store.jsonl'}]",
                   "data.max_len=64", "train.batch_size=16", "train.lr=3e-3",
                   "train.warmup_steps=5", "train.max_steps=60", "train.save_every=7",
                   "train.eval_every=20", "model.n_members=2", "progress=false"],
        "dpo": ["train-dpo", f"model.init={policy}", f"data.paths=[{tmp / 'store.jsonl'}]",
                "data.max_len=64", "train.batch_size=16", "train.lr=3e-3",
                "train.warmup_steps=5", "train.max_steps=40", "train.save_every=7",
                "train.eval_every=20", "progress=false"],
        "policy": ["train-policy", f"policy={policy}", f"prompts.path={tmp / 'prompts.txt'}",
                   "prompts.batch_prompts=4", "prompts.hold_out_every=4",
                   "prompts.eval_prompts=2", "sampling.max_new_tokens=8", "algo.k=4",
                   "algo.lr=0.01", "kl.coef=0.01", "steps=24", "save_every=5",
                   "sample_every=4", "reward.kind=scorer", "reward.scorer=length"],
        "loop": ["loop", *LOOP],
    }


def command(stage_args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf", *stage_args, f"out_dir={out}", "runtime.threads=1"]


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))


def saved_states(out: Path) -> dict[Path, int]:
    """Each stage's state folder (without `.old`) -> the newest saved step (before a restart)."""
    found: dict[Path, int] = {}
    for f in out.rglob("state.json"):
        if f.parent.name not in ("state", "state.old"):
            continue
        try:
            step = json.loads(f.read_text())["meta"]["step"]
        except (ValueError, KeyError):
            continue
        base = f.parent.with_name("state")
        found[base] = max(found.get(base, 0), step)
    return found


def silent_restarts(out: Path, before: dict[Path, int], loop_state: bool, err: str,
                    started: float) -> int:
    """Stages that held a state before the restart and ran again without resuming from it."""
    resumed = {}
    for m in re.finditer(r"resuming from (\S+) \(step (\d+)\)", err):
        base = Path(m.group(1).removesuffix(".old"))
        resumed[base] = max(resumed.get(base, 0), int(m.group(2)))
    bad = 0
    for base, step in before.items():
        metrics = base.parent / "metrics.jsonl"
        ran = metrics.is_file() and metrics.stat().st_mtime > started
        if ran and resumed.get(base, -1) < step:
            bad += 1
    started_loop = "round " in err  # past its start (a kill may land before)
    if loop_state and started_loop and f"resuming {out}:" not in err:
        bad += 1
    return bad


def fingerprint(out: Path) -> dict:
    """What must be bit-identical: every safetensors file outside states, logged figures."""
    fp: dict = {}
    for f in sorted(out.rglob("*.safetensors")):
        rel = f.relative_to(out)
        if any(p.startswith("state") for p in rel.parts):
            continue
        fp[str(rel)] = {k: hashlib.sha256(v.contiguous().view(-1).view(torch.uint8).numpy()
                                          .tobytes()).hexdigest() + str(v.dtype)
                        for k, v in sorted(load_file(str(f)).items())}
    for f in sorted(out.rglob("metrics.jsonl")):
        rows = [json.loads(s) for s in f.read_text().splitlines() if s.strip()]
        fp[str(f.relative_to(out))] = [(r.get("step"), r.get("loss"), r.get("reward"))
                                       for r in rows if "loss" in r or "reward" in r]
    if (out / "rounds.jsonl").is_file():
        fp["rounds"] = [json.loads(s).get("eval") for s in
                        (out / "rounds.jsonl").read_text().splitlines()]
    return fp


def run_stage(name: str, args: list[str], work: Path, kills: int, per_chain: int,
              rng: random.Random) -> dict:
    ref = work / f"{name}_ref"
    t0 = time.time()
    p = launch(command(args, ref), work / f"{name}_ref.log")
    if p.wait() != 0:
        raise SystemExit(f"{name}: the reference run failed: "
                         f"{(work / f'{name}_ref.log').read_text()[-2000:]}")
    duration = time.time() - t0
    want = fingerprint(ref)
    res = {"kills": 0, "sigterm": 0, "resumes": 0, "chains": 0, "mismatches": 0,
           "silent_restarts": 0, "bad_sigterm": 0,
           "sigterm_before_start": 0, "reference_s": round(duration, 1)}
    while res["kills"] < kills:
        out = work / f"{name}_chain{res['chains']}"
        res["chains"] += 1
        killed_here = 0
        while True:
            before = saved_states(out) if out.exists() else {}
            loop_state = (out / "state.json").is_file()
            log = work / f"{out.name}_{killed_here}.log"
            started = time.time()
            p = launch(command(args, out), log)
            if killed_here or before:
                res["resumes"] += 1
            delay = rng.uniform(0.5, duration)
            rc = None
            if killed_here < per_chain and res["kills"] < kills:
                try:
                    rc = p.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    term = rng.random() < 0.25
                    p.send_signal(signal.SIGTERM if term else signal.SIGKILL)
                    rc = p.wait()
                    res["kills"] += 1
                    killed_here += 1
                    if term:
                        res["sigterm"] += 1
                        last = (log.read_text().strip().splitlines() or [""])[-1]
                        if rc == -signal.SIGTERM:  # before the stage began: nothing to save
                            res["sigterm_before_start"] += 1
                        elif rc != 0 and not (rc == 143 and "run the same command" in last):
                            res["bad_sigterm"] += 1
            else:
                rc = p.wait()
            err = log.read_text()
            res["silent_restarts"] += silent_restarts(out, before, loop_state, err, started)
            if rc == 0:
                break
            if rc not in (-signal.SIGKILL, 143, -signal.SIGTERM):
                raise SystemExit(f"{name}: a run failed (rc {rc}): {err[-2000:]}")
        got = fingerprint(out)
        if got != want:
            res["mismatches"] += 1
            differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            print(f"{name}: chain {res['chains']} differs from the reference in {differ}",
                  file=sys.stderr, flush=True)
        print(f"{name}: chain {res['chains']}: {res}", file=sys.stderr, flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return res


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per stage (>= 20 for the goal)")
    ap.add_argument("--per-chain", type=int, default=5, help="kills of one run before it ends")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="reward,dpo,policy,loop")
    a = ap.parse_args()
    if not (STORIES / "tok512.bin").is_file():
        raise SystemExit(f"needs the shared files at {SHARED}")
    rng = random.Random(a.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cmds = fixtures(work)
        stages = {s: run_stage(s, cmds[s], work, a.kills, a.per_chain, rng)
                  for s in a.stages.split(",")}
    total = {k: sum(s[k] for s in stages.values())
             for k in ("kills", "sigterm", "resumes", "mismatches", "silent_restarts",
                       "bad_sigterm")}
    print(json.dumps({**total, "stages": stages, "seconds": round(time.time() - t0, 1),
                      "cpu": cpu_name()}))


if __name__ == "__main__":
    main()
