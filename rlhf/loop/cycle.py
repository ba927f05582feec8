"""`rlhf loop CONFIG [section.key=value ...]`: rounds of human (or simulated) feedback.

Each round r = 1..R: (1) sample pairs from the current policy, (2) get them rated (a named
simulated rater, or people through `rlhf rate`), (3) train the reward model on all
comparisons so far, (4) fine-tune the policy against it (KL to the starting policy),
(5) evaluate on fresh samples from held-out prompts. Round 0 is the starting policy,
evaluated only. The loop ends by printing one JSON line: gold_start, gold_end, kl, report.

Run folder (`out_dir`):
    config.yaml              the resolved config
    state.json               {"round": r, "step": s}: step s of round r is done; written
                             atomically, only after that step's outputs are in place, so a
                             killed loop resumes at the step it was in
    round_current.json       the record of the round in progress, so far
    prompts_train.jsonl      prompts for pairs and policy training (`rlhf.prompts.write_prompts`)
    prompts_eval.jsonl       held-out prompts: the same every round
    comparisons.jsonl        the comparison store: every answer of every round
    rounds.jsonl             one record per round (rebuilt from the round_*/record.json)
    round_00/eval.json       evaluation of the starting policy (all its sample texts;
                             samples.md: the same, readable)
    round_00/record.json
    round_RR/ (RR >= 01)
        queue.jsonl          pairs sampled from the previous round's policy
        comparisons_used.jsonl  the store as it was when this round's reward model trained
        reward_model/        the reward-model training folder (metrics.jsonl, state/,
                             model/: the round's reward model)
        policy_train/        the policy training folder (metrics.jsonl, state/, policy/: the
                             round's policy; gold.jsonl: the gold score of each step)
        eval.json            evaluation of this round's policy (samples.md: its samples)
        record.json          which policy made the pairs, which comparisons trained which
                             reward model, the paths of both models and the metrics
    report/                  `rlhf report`: report.md and PNG plots

The configuration (`LoopConfig`) lives in `rlhf.loop.config`.

Under torchrun (`torchrun --nproc-per-node N -m rlhf loop CONFIG`) the training steps
(reward, policy) run on every process with DDP; sampling pairs, rating, evaluation and every
file of the run folder are rank 0's, the other ranks waiting at a barrier after each step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch

from rlhf import distributed as dist
from rlhf.config import parse_cli, with_keys
from rlhf.dpo import implicit as dpo_implicit
from rlhf.feedback import web
from rlhf.feedback.comparisons import to_pairs
from rlhf.feedback.pairs import sample_pairs
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.scorers import get_scorer
from rlhf.feedback.simulated import loop_rater
from rlhf.feedback.store import ComparisonStore
from rlhf.lm.folders import load_model
from rlhf.lm.sampling import decode_rows
from rlhf.loop import direct
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import (
    init_run,
    lines,
    next_step,
    policy_path,
    read_json,
    rebuild_rounds,
    round_dir,
    write_json,
)
from rlhf.loop.report import write_report
from rlhf.loop.watch import announce, steps_done, stop_here, watch_round
from rlhf.policy import train as policy_stage
from rlhf.policy.evaluate import evaluate_policy
from rlhf.policy.run import make_score_fn
from rlhf.progress import Progress
from rlhf.prompts import load_prompts
from rlhf.reward import train as reward_stage
from rlhf.reward.evaluate import evaluate as evaluate_reward_model
from rlhf.reward.model import load_reward_model, rank_pairs, score_texts
from rlhf.runfolder import Interrupted, holds_run_folder, stop_signal
from rlhf.runtime import setup
from rlhf.state import state_meta

# ----------------------------------------------------------------------------- the five steps


def sample_step(cfg: LoopConfig, out: Path, r: int, device) -> dict:
    """(1) Pairs from the policy of round r-1 on training prompts; with selection=disagreement
    (from round 2 on) the ones the previous reward-model ensemble disagrees on most."""

    active = cfg.selection == "disagreement" and r > 1
    n = cfg.pairs_per_round * (cfg.oversample if active else 1)
    pool = load_prompts(str(out / "prompts_train.jsonl"))
    rng = random.Random(cfg.runtime.seed * 1000 + r)
    prompts = [pool[i % len(pool)] for i in rng.sample(range(max(n, len(pool))), n)]
    src = policy_path(cfg, out, r - 1)
    model, tok = load_model(src)
    gen = torch.Generator(device=device).manual_seed(cfg.runtime.seed * 1000 + r)
    items = sample_pairs(model.to(device), tok, prompts, cfg.sampling, gen,
                         source={"model": src, "round": r - 1})
    if active:
        rm, rm_tok = load_reward_model(out / f"round_{r - 1:02d}" / "reward_model" / "model")
        scores = rank_pairs(rm, rm_tok, items)
        order = sorted(range(len(items)), key=lambda i: -scores[i])[:cfg.pairs_per_round]
        items = [items[i] for i in order]
        for i, it in zip(order, items):
            it.served_because, it.meta["disagreement"] = "active", scores[i]
    for it in items:
        it.meta["round"] = r
    write_queue(round_dir(out, r) / "queue.jsonl", items)
    return {"pairs_from": src, "n_pairs": len(items), "selection": "active" if active
            else "random", "candidates": n}


def rate_step(cfg: LoopConfig, out: Path, r: int, record: dict) -> bool:
    """(2) Ratings for every pair of the round's queue. A simulated rater answers at once; for
    people, print the `rlhf rate` command and wait (poll_seconds > 0) or return False; with
    `rater.kind: web`, serve the queue and wait until it is rated."""
    queue = round_dir(out, r) / "queue.jsonl"
    items = read_queue(queue)
    store = ComparisonStore(out / "comparisons.jsonl")
    if cfg.rater.kind == "simulated":
        rater, record["rater"] = loop_rater(  # the noise used is recorded, and reported
            cfg.rater.scorer, cfg.runtime.seed * 1000 + r, cfg.rater.temperature,
            cfg.rater.tie_band, cfg.rater.name or None)
        done = store.answered_item_ids(rater.name)  # a resumed step rates only the rest
        store.extend(rater.rate_many([it for it in items if it.id not in done]))
        return True
    if cfg.rater.kind == "web":  # the server runs until the round is rated
        return web.serve_until_rated(queue, store.path, web.rater_names(
            cfg.rater.name or "rater", None), port=cfg.rater.port, say=lambda m: print(
            m, file=sys.stderr, flush=True), poll_seconds=cfg.rater.poll_seconds or 2.0)
    name = cfg.rater.name or "YOUR_NAME"
    while True:
        answered = {c.item_id for c in store.load()}
        missing = [it for it in items if it.id not in answered]
        if not missing:
            return True
        print(f"round {r}: {len(items) - len(missing)}/{len(items)} pairs rated. Rate them "
              f"with:\n  rlhf rate {queue} --rater {name} --store {store.path}\n"
              f"then run the same `rlhf loop` command again to resume.", file=sys.stderr)
        if cfg.rater.poll_seconds <= 0:
            return False
        time.sleep(cfg.rater.poll_seconds)


def reward_step(cfg: LoopConfig, out: Path, r: int, info: dist.DistInfo) -> dict:
    """(3) Train the reward model on every comparison so far (a snapshot of the store)."""
    rd = round_dir(out, r)
    snap = rd / "comparisons_used.jsonl"
    if info.is_main and not snap.is_file():  # a resumed step trains on the same snapshot
        shutil.copyfile(out / "comparisons.jsonl", snap.with_name(snap.name + ".tmp"))
        os.replace(snap.with_name(snap.name + ".tmp"), snap)
    dist.barrier(info)
    used = ComparisonStore(snap).load()
    prev = out / f"round_{r - 1:02d}" / "reward_model" / "model"
    init = str(prev) if cfg.reward_init == "previous" and r > 1 else cfg.policy
    rcfg = with_keys(cfg.reward, {  # what the loop decides (loop.config.LOOP_SETS["reward"])
        "out_dir": str(rd / "reward_model"), "data.paths": [str(snap)], "model.init": init,
        "runtime": cfg.runtime}, who="the loop")
    new = [c for c in used if c.meta.get("round") == r]
    fresh = previous_rm_accuracy(prev, new) if r > 1 and info.is_main else None
    metrics = reward_stage.train(rcfg)
    return {"comparisons": str(snap.relative_to(out)), "n_comparisons_total": len(used),
            "previous_rm_accuracy_on_new": fresh and fresh["accuracy"],
            "previous_rm_on_new": fresh,
            "n_comparisons_new": len(new),
            "reward_init": init, "reward_model": str(rd / "reward_model" / "model"),
            "reward_metrics_file": f"round_{r:02d}/reward_model/metrics.jsonl",
            "reward_metrics": metrics}


def previous_rm_accuracy(path: Path, comparisons) -> dict | None:
    """The previous round's reward model on this round's fresh comparisons (pairs from the
    newer policy, never trained on): how well it judged what the policy was becoming.
    {"accuracy", "hits", "n"} (n: pairs with a clear preference)."""
    pairs = to_pairs(comparisons, ties="drop")
    if not pairs:
        return None
    rm, tok = load_reward_model(path)
    res = evaluate_reward_model(rm, tok, pairs)
    n, acc = res.get("clear_pairs", 0), res.get("accuracy")
    return {"accuracy": acc, "hits": round(acc * n, 6), "n": n} if n else None


def policy_step(cfg: LoopConfig, out: Path, r: int, info: dist.DistInfo) -> dict:
    """(4) Fine-tune the policy of round r-1 against this round's reward model, KL to the
    start. The gold score of every step's samples (all ranks') goes to
    policy_train/gold.jsonl."""
    rd = round_dir(out, r)
    init = policy_path(cfg, out, r - 1)
    pcfg = with_keys(cfg.rl, {  # what the loop decides (loop.config.LOOP_SETS["rl"])
        "policy": init, "reference": cfg.policy, "out_dir": str(rd / "policy_train"),
        "reward.kind": "model", "reward.path": str(rd / "reward_model" / "model"),
        "prompts.path": str(out / "prompts_train.jsonl"), "prompts.hold_out_every": 0,
        "prompts.eval_prompts": 0, "sampling": cfg.sampling, "runtime": cfg.runtime},
        who="the loop")
    score_fn = None
    if cfg.eval.gold_scorer:

        gold = get_scorer(cfg.eval.gold_scorer)
        gold_log = GoldLog(rd / "policy_train") if info.is_main else None
        tok = load_model(init)[1]
        reward = make_score_fn(pcfg.reward, tok, info.device)

        def score_fn(gen, texts):
            golds = gold([t.strip() for t in decode_rows(tok, gen, include_prompt=False)])
            golds = dist.all_gather_list(golds, info)  # every rank's samples
            if gold_log is not None:
                gold_log.write(sum(golds) / len(golds))
            return reward(gen, texts)
    summary = policy_stage.train(pcfg, score_fn)
    return {"policy_init": init, "policy": policy_path(cfg, out, r),
            "policy_metrics_file": f"round_{r:02d}/policy_train/metrics.jsonl",
            "policy_gold_file": f"round_{r:02d}/policy_train/gold.jsonl" if score_fn else None,
            "policy_metrics": summary}


def golds_of(ev: dict, gold) -> list:
    """Per-sample gold scores of an evaluation (None each when no gold scorer)."""
    return gold(ev["texts"]) if gold is not None else [None] * len(ev["texts"])


class GoldLog:
    """policy_train/gold.jsonl: the gold score of each training step's samples. Rows after the
    policy trainer's saved state are dropped first, so a resumed step logs each step once."""

    def __init__(self, folder: Path):
        self.path = folder / "gold.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        done = state_meta(folder / "state").get("step", 0)  # `state`, else `state.old`
        rows = [json.loads(s) for s in lines(self.path)] if self.path.is_file() else []
        rows = [row for row in rows if row["step"] <= done]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        self.step = done

    def write(self, gold: float) -> None:
        self.step += 1
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": self.step, "gold": gold}) + "\n")


def eval_step(cfg: LoopConfig, out: Path, r: int, device) -> dict:
    """(5) Gold score, KL to the start and reward-model win rate on held-out prompts."""

    prompts = [p for p in load_prompts(str(out / "prompts_eval.jsonl"))
               for _ in range(cfg.eval.samples_per_prompt)]
    model, tok = load_model(policy_path(cfg, out, r))
    ref, _ = load_model(cfg.policy)
    reward = start_texts = None
    if r > 0 and cfg.policy_method == "dpo":  # the round's implicit reward (its reference)
        pol, pref, ptok, meta = dpo_implicit.load_dpo_policy(policy_path(cfg, out, r), device)
        reward = dpo_implicit.text_scorer(pol, pref, ptok, meta["beta"], meta["max_len"])
    elif r > 0:
        rm, rm_tok = load_reward_model(out / f"round_{r:02d}" / "reward_model" / "model",
                                       device)
        reward = lambda ps, ts: score_texts(rm, rm_tok, ps, ts).tolist()  # noqa: E731
    if r > 0:
        start_texts = read_json(out / "round_00" / "eval.json")["texts"]
    gold = get_scorer(cfg.eval.gold_scorer) if cfg.eval.gold_scorer else None
    ev = evaluate_policy(model.to(device), ref.to(device), tok, prompts, cfg.sampling,
                         cfg.eval.seed, gold, reward, start_texts)
    if r == 0:  # the start against itself, for the plots
        ev.update(reward_gain=0.0, win_rate=0.5)
    write_json(round_dir(out, r) / "eval.json", ev)
    md = [f"# Round {r}: `{policy_path(cfg, out, r)}` on held-out prompts (seed "
          f"{cfg.eval.seed})", ""]
    md += [f"**{p}** {t}" + (f"  *(gold {g:.2f})*" if g is not None else "") + "\n"
           for p, t, g in zip(prompts, ev["texts"], golds_of(ev, gold))]
    (round_dir(out, r) / "samples.md").write_text("\n".join(md))
    return {k: v for k, v in ev.items() if k != "texts"}


# ----------------------------------------------------------------------------- the loop


@holds_run_folder  # one run per folder (a lock), SIGINT/SIGTERM caught: see rlhf.runfolder
def run(cfg: LoopConfig) -> dict:
    """Run (or resume) the loop to its last round; returns the final summary (on rank 0)."""
    # 1. processes (torchrun), the run folder: a fresh one, or where a killed run stopped
    info = dist.init(cfg.runtime.device)
    setup(cfg.runtime)
    main, out = info.is_main, Path(cfg.out_dir)
    state = dist.from_main(init_run(cfg, out) if main else None, info)
    record: dict = read_json(out / "round_current.json", {}) if main else {}
    bar = Progress("loop", 1 + 5 * cfg.rounds, steps_done(state), enabled=main, every_s=1e9)
    # 2. one step at a time; each step's outputs are in place before the state advances
    while (state["round"], state["step"]) != (cfg.rounds, "eval"):
        r, step = next_step(state)
        t0 = time.time()
        if main:
            bar.write(f"round {r}: {step}")
        record = do_step(cfg, out, r, step, info, record)
        if record is None:
            return {"status": "waiting for ratings", "round": r,
                    "queue": str(out / f"round_{r:02d}" / "queue.jsonl")}
        state = {"round": r, "step": step}
        if main:
            record.setdefault("seconds", {})[step] = round(time.time() - t0, 1)
            if step == "eval":
                write_json(round_dir(out, r) / "record.json", record)
                rebuild_rounds(out)
            write_json(out / "round_current.json", record)
            write_json(out / "state.json", state)
            announce(bar, r, step, time.time() - t0, record)
        if dist.from_main(main and stop_here(cfg, step, record), info):
            break
        dist.barrier(info)
        if sig := stop_signal(info):  # SIGINT/SIGTERM during a step: it is done and saved
            raise Interrupted(sig, f"after round {r}'s {step} step of {out}")
    # 3. the report and the summary line (rank 0)
    bar.close()
    if not main:
        return {"rank": info.rank}

    return final_summary(cfg, out)


def do_step(cfg: LoopConfig, out: Path, r: int, step: str, info, record: dict) -> dict | None:
    """(2) One step of round r, by the policy method; the round's record so far, or None when
    the pairs still wait for ratings. Sampling, rating and evaluation are rank 0's."""
    main, dpo = info.is_main, cfg.policy_method == "dpo"
    if step == "sample" and main:
        return {"round": r, **sample_step(cfg, out, r, info.device)}
    if step == "rate":
        return record if dist.from_main(rate_step(cfg, out, r, record) if main else None,
                                        info) else None
    if step == "reward":
        record.update(direct.data_step(out, r, policy_path(cfg, out, r - 1), info) if dpo
                      else reward_step(cfg, out, r, info))
    elif step == "policy":
        record.update(direct.policy_step(cfg, out, r, policy_path(cfg, out, r - 1), info)
                      if dpo else policy_step(cfg, out, r, info))
    elif step == "eval" and main:
        return eval_record(cfg, out, r, info.device, record)
    return record


def final_summary(cfg: LoopConfig, out: Path) -> dict:
    """(3) The report and the summary line: gold and KL at the start and end, win rate, and the
    rounds that warned."""
    report = write_report(out)
    rounds = [json.loads(s) for s in lines(out / "rounds.jsonl")]
    first, last = rounds[0]["eval"], rounds[-1]["eval"]
    summary = {"rounds": len(rounds) - 1, "kl": last["kl"], "report": str(report)}
    if "gold" in first:
        summary.update(gold_start=first["gold"], gold_end=last["gold"])
    if "win_rate" in last:
        summary["win_rate"] = last["win_rate"]
    warned = {r["round"]: r["warnings"] for r in rounds if r.get("warnings")}
    summary["warnings"] = warned  # {round: [warning, ...]}: empty when nothing was flagged
    if cfg.stop_on_warning and warned and rounds[-1]["round"] < cfg.rounds:
        summary["stopped_on_warning"] = rounds[-1]["round"]
    return summary


def eval_record(cfg: LoopConfig, out: Path, r: int, device, record: dict) -> dict:
    """(5) as a round record: the evaluation, with the reward model's held-out accuracy and
    the previous reward model's accuracy on this round's pairs beside it."""
    record.setdefault("round", r)
    record.setdefault("policy", policy_path(cfg, out, r))
    record["eval"] = eval_step(cfg, out, r, device)
    metrics = record.get("policy_metrics" if cfg.policy_method == "dpo" else "reward_metrics")
    acc = (metrics or {}).get("last_val_accuracy")
    if isinstance(acc, (int, float)):
        record["eval"]["rm_accuracy"] = acc
    if isinstance(record.get("previous_rm_accuracy_on_new"), float):
        record["eval"]["prev_rm_on_policy_accuracy"] = record["previous_rm_accuracy_on_new"]
    if r > 0:
        prompts = [p for p in load_prompts(str(out / "prompts_eval.jsonl"))
                   for _ in range(cfg.eval.samples_per_prompt)]
        watch_round(cfg, out, r, record, prompts)
    return record


def cli(argv: list[str]) -> int:
    cfg: LoopConfig = parse_cli(LoopConfig, "rlhf loop", __doc__, argv)
    summary = run(cfg)
    info = dist.init(cfg.runtime.device)
    if info.is_main:
        if "report" in summary:
            print(f"report: {summary['report']}", file=sys.stderr)
        print(json.dumps(summary), flush=True)
    dist.finish(info)
    return 3 if summary.get("status") == "waiting for ratings" else 0
