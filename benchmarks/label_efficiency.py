"""Label efficiency: with N simulated comparisons, how much of the gold-score gain that direct
RL on the rater's own scorer reaches (at the same KL) does learning from comparisons reach?
(The "mock labels" experiments of Ziegler et al. 2019, sec. 3.1.)

    python benchmarks/label_efficiency.py [CONFIG] [--labels 200 500 1000] [--seeds 0 1 2]
                                          [--methods rm dpo] [--selections random disagreement]
                                          [--out DIR] [section.key=value ...]

CONFIG is a `rlhf loop` config (default configs/demo.yaml); every run uses its settings.
1. Direct RL: rlhf.policy.train with the gold scorer (VADER of the response) as the reward,
   for as many policy steps as the loop's runs take (rounds x rl.steps), at the config's KL
   coefficient and a quarter of it, evaluated every `--every` steps on the loop's held-out
   prompts (rlhf.policy.evaluate): (KL, gold) points, whose upper envelope is the frontier.
2. Learning from comparisons: `rlhf loop` with N comparisons in all (N / rounds per round),
   by each of `--methods`: 'rm' = reward model + RL (the config's `reward` and `rl`), 'dpo' =
   `policy_method: dpo` (each round's DPO on that round's comparisons, reference the start;
   DPO_SETTINGS below, mirroring the config's reward-model data and batch settings, then the
   command line's overrides). Same seeds, prompts, pairs of round 1, rater and evaluation.
   Each RM + RLOO run is made once per `--selections` entry (default: the config's
   `selection`): 'random' pairs, or the ones the reward-model ensemble disagrees on most
   (active selection). DPO has no ensemble, so it always rates random pairs.
3. For each N: gain fraction = (gold_N - gold_0) / (gold_direct(KL_N) - gold_0), with
   gold_direct read off the direct-RL frontier at the loop's final KL (linear between points;
   its last point if KL_N is beyond every direct-RL point: the share is then an upper
   bound, marked `≤`). Below direct RL's first measured point (a run that hardly moved)
   there is no frontier to read: the share is n/a, and the gain and KL speak for it.
4. By kind (`--kinds`): the same N answered items of one kind each, learned from as the loop
   routes it (KINDS below): comparisons (the `--methods`), rankings of 4 (their 6 pairs each,
   weighted 1/6, to the reward model, then RL), thumbs ratings (2 per prompt, so one rater's
   up and down on a prompt is a pair, to the reward model then RL; or KTO on the ratings
   alone), corrections (a supervised step on the corrected texts alone, `rl.steps=0`; or that
   and RL against a reward model trained on corrected-over-original pairs).
Prints one JSON line, then Markdown tables: each run, and the mean over seeds.
The README's table: `configs/demo.yaml --seeds 0 1 2 rounds=2 rl.kl.coef=0.05`; the table by
kind (docs/feedback-kinds.md): `configs/demo.yaml --labels 100 300 --seeds 0 1 2 --methods rm
--kinds compare rank rate rate-kto correct-sft correct-sft-rl rounds=2`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from rlhf.config import load_config
from rlhf.harness.runtime import setup
from rlhf.lm.folders import load_model
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.loop.folder import init_run
from rlhf.policy.evaluate import evaluate_policy
from rlhf.policy.train import train
from rlhf.prompts import load_prompts
from rlhf.raters.scorers import get_scorer

DPO_SETTINGS = ["dpo.data.val_fraction=0.2", "dpo.train.batch_size=16", "dpo.train.epochs=4",
                "dpo.train.warmup_steps=2", "dpo.train.lr=5e-4", "dpo.loss.beta=0.1"]
"""The DPO runs' keys (before the command line's overrides): the demo's reward-model split,
batch and epochs; lr as the demo's policy; beta 0.1 (Rafailov et al. 2023's default)."""
KTO_SETTINGS = ["kto.data.val_fraction=0.2", "kto.train.batch_size=16", "kto.train.epochs=4",
                "kto.train.warmup_steps=2", "kto.train.lr=5e-4", "kto.loss.beta=0.1"]
"""The KTO runs' keys: as DPO's (beta 0.1 is also Ethayarajh et al. 2024's default)."""
SFT_SETTINGS = ["sft.train.batch_size=8", "sft.train.epochs=2", "sft.train.warmup_steps=0"]
"""The supervised step on corrections: configs/demo_feedback.yaml's."""
SETTINGS = DPO_SETTINGS + KTO_SETTINGS + SFT_SETTINGS


KINDS = {  # kind: (the loop keys that make every item of that kind, policy method)
    "compare": ([], None),  # the --methods (and --selections) runs
    "rank": (["mix.compare=0", "mix.rank=1", "rank_k=4"], "rl"),
    "rate": (["mix.compare=0", "mix.rate=1", "rate_k=2"], "rl"),
    "rate-kto": (["mix.compare=0", "mix.rate=1", "rate_k=2"], "kto"),
    "correct-sft": (["mix.compare=0", "mix.correct=1", "rl.steps=0"], "rl"),
    "correct-sft-rl": (["mix.compare=0", "mix.correct=1"], "rl"),
}
"""What each `--kinds` entry asks for and how the loop learns from it. Ratings are asked 2 to a
prompt (rate_k=2), so N rated items are N/2 prompts; every other kind is one item a prompt."""


def direct_rl(cfg: LoopConfig, out: Path, kl_coef: float, every: int) -> list[dict]:
    """Direct RL on the gold scorer with KL coefficient `kl_coef`, as many steps as a loop run
    takes; a (step, KL, gold) point on the held-out prompts every `every` steps."""
    device = setup(cfg.runtime)
    init_run(cfg, out)  # the same prompt split as the loop's runs
    prompts = [p for p in load_prompts(str(out / "prompts_eval.jsonl"))
               for _ in range(cfg.eval.samples_per_prompt)]
    ref, tok = load_model(cfg.policy)
    gold = get_scorer(cfg.eval.gold_scorer)
    curve = [{"step": 0, "kl_coef": kl_coef, **summary(evaluate_policy(
        ref, ref, tok, prompts, cfg.sampling, cfg.eval.seed, gold))}]
    for step in range(every, cfg.rounds * cfg.rl.steps + 1, every):
        pcfg = dataclasses.replace(cfg.rl, policy=cfg.policy, reference=cfg.policy,
                                   out_dir=str(out / "policy_train"), steps=step,
                                   sampling=cfg.sampling, runtime=cfg.runtime)
        pcfg.kl = dataclasses.replace(cfg.rl.kl, coef=kl_coef)
        pcfg.reward = dataclasses.replace(cfg.rl.reward, kind="scorer",
                                          scorer=cfg.eval.gold_scorer, include_prompt=False)
        pcfg.prompts = dataclasses.replace(cfg.rl.prompts, path=str(out / "prompts_train.jsonl"),
                                           hold_out_every=0, eval_prompts=0)
        train(pcfg)  # resumes from the previous segment's state
        model, _ = load_model(out / "policy_train" / "policy")
        ev = evaluate_policy(model.to(device), ref, tok, prompts, cfg.sampling, cfg.eval.seed,
                             gold)
        curve.append({"step": step, "kl_coef": kl_coef, **summary(ev)})
        print(json.dumps({"direct_rl": curve[-1]}), file=sys.stderr, flush=True)
    return curve


def summary(ev: dict) -> dict:
    return {"kl": ev["kl"], "gold": ev["gold"]}


def gold_at(curve: list[dict], kl: float) -> tuple[float, bool]:
    """Direct RL's frontier at `kl`: the best gold score of any direct-RL point at KL <= kl,
    linear between frontier points. True when `kl` is beyond every direct-RL point."""
    pts, best = [], float("-inf")
    for p in sorted(curve, key=lambda p: p["kl"]):
        if p["gold"] > best:
            best = p["gold"]
            pts.append((p["kl"], best))
    if kl >= pts[-1][0]:
        return pts[-1][1], kl > max(p["kl"] for p in curve)
    for (k0, g0), (k1, g1) in zip(pts, pts[1:]):
        if k0 <= kl <= k1:
            return g0 + (g1 - g0) * (kl - k0) / max(k1 - k0, 1e-9), False
    return pts[0][1], False


def share(r: dict) -> str:
    if math.isnan(r["fraction"]):
        return "n/a"
    return f"{'≤' if r['beyond'] else ''}{100 * r['fraction']:.0f}%"


def table(rows: list[dict]) -> str:
    """Per run, then the mean over seeds for each number of comparisons, method, selection."""
    out = ["| answered items | method | selection | seed | KL to start | gold score, start -> end "
           "| direct RL gold at that KL | share of direct RL's gain |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['labels']} | {method_name(r['method'])} | {r['selection']} | {r['seed']} | "
            f"{r['kl']:.1f} | {r['gold_start']:.3f} -> {r['gold']:.3f} | {r['direct_gold']:.3f} "
            f"| {share(r)} |" for r in rows]
    out += ["", "| answered items | method | selection | mean KL | mean gold gain ± s.e. "
            "| mean share of direct RL's gain | per seed |", "|---|---|---|---|---|---|---|"]
    for n, method, sel in sorted({(r["labels"], r["method"], r["selection"]) for r in rows}):
        rs = [r for r in rows if (r["labels"], r["method"], r["selection"]) == (n, method, sel)]
        kl, gain = sum(r["kl"] for r in rs) / len(rs), sum(r["gain"] for r in rs) / len(rs)
        se = statistics.stdev(r["gain"] for r in rs) / math.sqrt(len(rs)) if len(rs) > 1 else 0
        fracs = [r["fraction"] for r in rs if not math.isnan(r["fraction"])]
        frac = sum(fracs) / len(fracs) if fracs else float("nan")
        mean = "n/a" if math.isnan(frac) else f"{100 * frac:.0f}%"
        out.append(f"| {n} | {method_name(method)} | {sel} | {kl:.1f} | {gain:+.3f} ± {se:.3f} "
                   f"| {mean} | "
                   f"{', '.join(share(r) for r in rs)} |")
    return "\n".join(out)


METHOD_NAMES = {"rm": "comparisons: RM + RLOO", "dpo": "comparisons: DPO",
                "rank": "rankings of 4: RM + RLOO", "rate": "thumbs: RM + RLOO",
                "rate-kto": "thumbs: KTO", "correct-sft": "corrections: SFT",
                "correct-sft-rl": "corrections: SFT, RM + RLOO"}


def method_name(method: str) -> str:
    """'rm' -> RM + RLOO; 'dpo b0.1' -> DPO (beta 0.1)."""
    kind, _, beta = method.partition(" b")
    return METHOD_NAMES[kind] + (f" (beta {beta})" if beta else "")


def round_records(folder: Path) -> list[dict]:
    """A loop run's round records (rounds.jsonl)."""
    path = folder / "rounds.jsonl"
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def one_seed(cfg: LoopConfig, labels: list[int], every: int, out: Path,
             methods: list[str], selections: list[str] | None = None,
             kinds: tuple[str, ...] = ("compare",), config: str = "",
             overrides: tuple[str, ...] = ()) -> tuple[list, list]:
    """Direct RL's (KL, gold) points and the loop runs' rows for one seed: the comparison
    runs by `methods` (and `selections`), and one run for each other entry of `kinds`, made
    from `config` with KINDS' keys, then `overrides`."""
    # 1. direct RL on the gold scorer: (KL, gold) points at two KL coefficients
    curve = []
    for coef in (cfg.rl.kl.coef, cfg.rl.kl.coef / 4):
        folder = out / f"direct_kl{coef:g}"
        saved = folder / "curve.json"  # a finished curve is reused (e.g. to add a method)
        if saved.is_file():
            curve += json.loads(saved.read_text())
            continue
        points = direct_rl(dataclasses.replace(cfg, out_dir=str(folder)), folder, coef, every)
        saved.write_text(json.dumps(points))
        curve += points
    gold_0 = curve[0]["gold"]
    # 2. learning from N comparisons, 3. the share of direct RL's gain at the same KL
    rows = []
    runs = [(n, m, sel) for n in labels for m in methods
            for sel in (selections or [cfg.selection] if m == "rm" else ["random"])]
    runs += [(n, kind, "random") for n in labels for kind in kinds if kind != "compare"]
    if "compare" not in kinds:
        runs = [r for r in runs if r[1] in KINDS]
    for n, method, sel in runs:
        per_round, kcfg = n // cfg.rounds, cfg
        if method in KINDS:  # one kind of item: the loop's keys for it
            kcfg = load_config(LoopConfig, config, [*SETTINGS, *KINDS[method][0],
                                                    *overrides, f"runtime.seed={cfg.runtime.seed}"])
            folder = out / f"labels_{n}_{method}"
            kcfg = dataclasses.replace(kcfg, policy_method=KINDS[method][1])
            per_round //= kcfg.rate_k if method.startswith("rate") else 1  # prompts a round
        else:
            tag = "" if method == "rm" else f"_dpo_b{cfg.dpo.loss.beta:g}"
            folder = out / f"labels_{n}{tag}{f'_{sel}' if selections else ''}"
            kcfg = dataclasses.replace(cfg, selection=sel,
                                       policy_method="dpo" if method == "dpo" else "rl")
        res = run(dataclasses.replace(kcfg, out_dir=str(folder), pairs_per_round=per_round))
        answers = Counter()
        for rec in round_records(folder):
            answers.update(rec.get("answers", {}))
        direct, beyond = gold_at(curve, res["kl"])
        first = min(p["kl"] for p in curve if p["step"] > 0)
        rows.append({"labels": n // cfg.rounds * cfg.rounds, "answers": dict(answers),
                     "method": method if method != "dpo" else f"dpo b{cfg.dpo.loss.beta:g}",
                     "selection": sel, "warnings": sorted(res.get("warnings", {})),
                     "seed": cfg.runtime.seed,
                     "kl": res["kl"], "gold_start": gold_0, "gold": res["gold_end"],
                     "gain": res["gold_end"] - gold_0, "direct_gold": direct, "beyond": beyond,
                     "fraction": (res["gold_end"] - gold_0) / (direct - gold_0)
                     if direct - gold_0 > 1e-6 and res["kl"] >= first else float("nan")})
        print(json.dumps({"rlhf": rows[-1]}), file=sys.stderr, flush=True)
    return curve, rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="configs/demo.yaml")
    p.add_argument("--labels", type=int, nargs="+", default=[200, 500, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="runtime.seed values")
    p.add_argument("--out", default="runs/label_efficiency")
    p.add_argument("--every", type=int, default=10, help="direct RL: evaluate every N steps")
    p.add_argument("--methods", nargs="+", choices=["rm", "dpo"], default=["rm", "dpo"])
    p.add_argument("--selections", nargs="+", choices=["random", "disagreement"], default=None,
                   help="pair selections for the RM + RLOO runs (default: the config's)")
    p.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=["compare"],
                   help="what the answered items are (KINDS); compare runs by --methods")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    t0, curves, rows = time.time(), {}, []
    for seed in a.seeds:
        cfg: LoopConfig = load_config(LoopConfig, a.config, [*SETTINGS, *a.overrides,
                                                             f"runtime.seed={seed}"])
        curves[seed], seed_rows = one_seed(cfg, a.labels, a.every, Path(a.out) / f"seed{seed}",
                                           a.methods, a.selections, tuple(a.kinds), a.config,
                                           tuple(a.overrides))
        rows += seed_rows
    print(json.dumps({"direct_rl": curves, "rlhf": rows, "seconds": round(time.time() - t0)}))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
