"""Lock-step against async (`mode: async`): the demo task rated by 8 simulated web raters who
answer over HTTP at a human pace, with the time scaled down.

    python benchmarks/async_loop.py                 # configs/demo.yaml, 3 seeds (long)
    python benchmarks/async_loop.py --quick         # 2 smaller rounds, a few minutes a run

Both modes run the same loop config (`rater.kind: web`; `mode: async` with
`live.answers_per_round` = pairs_per_round, so both ask for the same number of answers per
round) with the same crowd: 8 `rlhf.raters.paced` raters in threads of this process, each
answering after a log-normal delay (median `--median` seconds times `--time-scale`, shape 0.5)
by the simulated rater's choice rule on the vader scorer (the loop's gold scorer). A rater
idles when the page has nothing for it (a lock-step round training, or no server between
rounds; async: the margin ran out). Per mode and seed: the raters' idle share (idle over
idle plus busy, from each one's first item to the end of the run), the wall-clock seconds of
the run and until the store held rounds x pairs_per_round answers (the lock-step total), the
answers the rounds trained on, gold gain (end - start) and KL to the start at the end, and the
mean staleness of the answers trained on (policy versions between the one that sampled the
item and the one the round trains from). Prints one JSON line: per mode the means over the
seeds and the per-seed figures.

An async round takes every answer in at its cut (`live.answers_per_round` is the least it
waits for), so the two modes train on the same number of answers only while the raters are
slower than training, as people are; with faster raters (a smaller `--time-scale`) the async
rounds train on more answers than lock-step ones, and take longer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.config import load_config  # noqa: E402
from rlhf.loop.config import LoopConfig  # noqa: E402
from rlhf.loop.cycle import run  # noqa: E402
from rlhf.loop.live_stats import answer_rows  # noqa: E402
from rlhf.raters.paced import Pace, PacedCrowd  # noqa: E402

QUICK = ["rounds=2", "pairs_per_round=48", "rl.steps=8", "reward.train.epochs=2",
         "eval.n_prompts=16", "sampling.max_new_tokens=32", "rl.prompts.batch_prompts=8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(mode: str, seed: int, args, folder: Path) -> dict:
    """One loop run with its crowd; its figures."""
    out, port = folder / f"{mode}-{seed}", free_port()
    crowd = PacedCrowd(out / "comparisons.jsonl", args.raters, port, seed=seed,
                       pace=Pace(args.median, 0.5, args.time_scale))
    over = [*(QUICK if args.quick else []), f"out_dir={out}", f"runtime.seed={seed}",
            "rater.kind=web", f"rater.name={crowd.rater_names}", f"rater.port={port}",
            "rater.poll_seconds=0.2", f"mode={mode}", "live.poll_seconds=0.2",
            f"live.ahead={args.raters * 2}"]
    cfg = load_config(LoopConfig, str(ROOT / "configs" / "demo.yaml"), over)
    t0 = time.time()
    crowd.start()
    try:
        summary = run(cfg)
    finally:
        logs = crowd.stop()
    wall = time.time() - t0
    rows = answer_rows((out / "comparisons.jsonl").read_bytes())
    target = cfg.rounds * cfg.pairs_per_round
    ends = sorted(r["shown_at"] + r["seconds"] for r in rows)
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    used = recs[-1].get("n_comparisons_total")
    stale = [(r["live"]["staleness"]["mean"], r["live"]["n_new"]) for r in recs[1:]
             if r.get("live") and r["live"]["staleness"]["mean"] is not None]
    idle = sum(g.idle_s for g in logs.values())
    busy = sum(g.busy_s for g in logs.values())
    return {"seed": seed, "idle_share": round(idle / (idle + busy), 4) if idle + busy else None,
            "wall_s": round(wall, 1),
            "s_to_answers": round(ends[target - 1] - t0, 1) if len(ends) >= target else None,
            "answers_stored": len(rows), "answers_trained_on": used,
            "gold_gain": round(summary["gold_end"] - summary["gold_start"], 4),
            "kl": round(summary["kl"], 4),
            "mean_staleness": round(sum(m * n for m, n in stale) / sum(n for _, n in stale), 3)
            if stale else 0.0}


def mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(statistics.mean(vals), 4) if vals else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smaller rounds: {' '.join(QUICK)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed.. (to run "
                   "the seeds in separate commands)")
    p.add_argument("--raters", type=int, default=8)
    p.add_argument("--median", type=float, default=20.0, help="a person's median seconds "
                   "per answer")
    p.add_argument("--time-scale", type=float, default=0.2, help="every delay times this "
                   "(0.2: a median answer of 4 s, 8 raters rate a demo round in about the "
                   "time it trains on this 2-core CPU, as people would be the slower part)")
    p.add_argument("--modes", default="lockstep,async")
    args = p.parse_args()
    os.environ.setdefault("RLHF_PROGRESS_EVERY", "1000")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for mode in args.modes.split(","):
                row = one_run(mode, seed, args, Path(tmp))
                print(f"{mode} seed {seed}: {row}", file=sys.stderr, flush=True)
                results.setdefault(mode, []).append(row)
    keys = ("idle_share", "wall_s", "s_to_answers", "answers_trained_on", "gold_gain", "kl",
            "mean_staleness")
    print(json.dumps({"config": "configs/demo.yaml" + (" --quick" if args.quick else ""),
                      "raters": args.raters, "median_s": args.median,
                      "time_scale": args.time_scale, "cpu": platform.processor() or
                      platform.machine(), "threads": os.cpu_count(),
                      **{mode: {"mean": {k: mean(rows, k) for k in keys}, "runs": rows}
                         for mode, rows in results.items()}}))


if __name__ == "__main__":
    main()
