"""Can the policy game the reward model by length? The demo loop with a simulated rater that
likes longer stories as well as happier ones, its reward model plain or kept from handing
length to the policy (ODIN's length head, or a length term; the policy trained on the quality
head alone), the same seeds, prompts and rater for each.

    python benchmarks/length_gaming.py [CONFIG] [--seeds 0 1 2] [--out DIR]
                                       [--rater happy_and_long] [--variants plain length_term]
                                       [section.key=value ...]

CONFIG is a `rlhf loop` config (default configs/demo.yaml, 2 rounds). The rater:
`happy_and_long` (below: VADER + words / 25, so ten more words weigh as much as a 0.4 rise
in sentiment), `long_and_happy` (VADER + words / 5: length weighs most), `happy_or_long` (a
crowd: each item answered by the happy rater or, half the time, by one who wants longer
stories) or `length` (words only). The variants: `plain`, `decorrelated` (ODIN's length head)
and `length_term` (the preferences fitted as quality + a learned coefficient x length,
`reward.model.length_term`; the policy trained on the quality head alone). The gold score
stays VADER: what the rater should have wanted. Per run, from the loop's length audit
(rlhf.loop.report_length): the gold gain, the KL, the change in mean response length, the
share of the last round's reward gain that length explains, and whether any round was
flagged "mostly length". Prints one JSON line (means and standard errors over seeds by
variant, each run's figures) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from rlhf.config import load_config
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.loop.report_length import policy_length_rows
from rlhf.raters.scorers import length, vader
from rlhf.raters.simulated import SimulatedRater


def happy_and_long(texts: list[str]) -> list[float]:
    """The simulated rater's taste: VADER compound sentiment + words / 25."""
    return [v + n / 25 for v, n in zip(vader(texts), length(texts))]


def long_and_happy(texts: list[str]) -> list[float]:
    """A rater who cares most for length: VADER compound sentiment + words / 5 (ten more
    words weigh as much as a 2.0 rise in sentiment, its whole range)."""
    return [v + n / 5 for v, n in zip(vader(texts), length(texts))]


class HappyOrLongCrowd:
    """Two raters mixed into one crowd: each item goes to the happy rater (VADER, its default
    noise) or, with probability 1/2, to one who wants longer stories (words, temperature 1
    word, ties within half a word), as the `length` rater below. Each answer names the
    rater who gave it."""

    def __init__(self, seed: int = 0, name: str = "crowd"):
        self.name, self.rng = name, random.Random(seed)
        self.raters = [SimulatedRater("vader", seed, name=f"{name}-happy"),
                       SimulatedRater("length", seed + 1, 1.0, 0.5, name=f"{name}-long")]

    def rate_many(self, items: list) -> list:
        who = [self.rng.random() < 0.5 for _ in items]  # True: the length rater
        answers = {}
        for k, rater in enumerate(self.raters):
            mine = [i for i, w in enumerate(who) if w == bool(k)]
            for i, a in zip(mine, rater.rate_many([items[i] for i in mine])):
                answers[i] = a
        return [answers[i] for i in range(len(items))]


RATERS = {  # name: loop keys (a plugged-in scorer states its own noise, in its units)
    "happy_and_long": ["rater.scorer=length_gaming:happy_and_long", "rater.temperature=0.25",
                       "rater.tie_band=0.05"],
    "long_and_happy": ["rater.scorer=length_gaming:long_and_happy", "rater.temperature=0.25",
                       "rater.tie_band=0.05"],
    "length": ["rater.scorer=length", "rater.temperature=1.0", "rater.tie_band=0.5"],
    "happy_or_long": ["rater.scorer=length_gaming:HappyOrLongCrowd"],
}
VARIANTS = {"plain": ["reward.model.length_head=false"],
            "decorrelated": ["reward.model.length_head=true"],
            "length_term": ["reward.model.length_term=true"]}


def one_run(config: str, keys: list[str], out: Path) -> dict:
    """One loop run and its length audit -> the figures of a row."""
    cfg = load_config(LoopConfig, config, [*keys, f"out_dir={out}"])
    t0 = time.perf_counter()
    res = run(cfg)
    rounds = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines() if s]
    rows = policy_length_rows(out, rounds)
    last = rows[-1]
    return {"gold_start": rows[0]["gold"], "gold": res["gold_end"],
            "gain": res["gold_end"] - rows[0]["gold"], "kl": res["kl"],
            "length_start": rows[0]["length"], "length": last["length"],
            "length_change": last["length"] - rows[0]["length"],
            "share": last.get("share"), "flagged": any(x.get("warn") for x in rows),
            "shares": [x.get("share") for x in rows[1:]], "seconds": time.perf_counter() - t0}


def mean_se(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return statistics.fmean(xs), se


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="configs/demo.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/length_gaming")
    p.add_argument("--rater", choices=sorted(RATERS), default="happy_and_long")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                   default=["plain", "decorrelated"])
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    if "=" in a.config:  # no CONFIG given: the first word is an override
        a.overrides, a.config = [a.config, *a.overrides], "configs/demo.yaml"
    runs = []
    for seed in a.seeds:
        for variant in a.variants:
            keys = ["rounds=2", *RATERS[a.rater], *VARIANTS[variant], *a.overrides,
                    f"runtime.seed={seed}"]
            row = {"variant": variant, "seed": seed,
                   **one_run(a.config, keys, Path(a.out) / f"{variant}_seed{seed}")}
            runs.append(row)
            print(json.dumps({"run": row}), file=sys.stderr, flush=True)
    summary = {}
    for variant in a.variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {k: mean_se([r[k] for r in mine])
                            for k in ("gain", "kl", "length_change", "share")}
        summary[variant]["flagged"] = sum(r["flagged"] for r in mine)
        summary[variant]["runs"] = len(mine)
    print(json.dumps({"benchmark": "length_gaming", "rater": a.rater, "config": a.config,
                      "overrides": a.overrides, "summary": summary, "runs": runs}))
    print("\n| variant | gold gain | KL | length change (words) | length share of the gain "
          "| runs flagged |\n|---|---|---|---|---|---|")
    for variant, s in summary.items():
        cell = [f"{m:+.3f} ± {se:.3f}" if k != "kl" else f"{m:.1f} ± {se:.1f}"
                for k, (m, se) in ((k, s[k]) for k in ("gain", "kl", "length_change", "share"))]
        print(f"| {variant} | {' | '.join(cell)} | {s['flagged']} of {s['runs']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
