"""The five steps of a round, for both policy methods, on the models the loop holds in memory
(`rlhf.loop.models`): (1) sample pairs from the previous round's policy, (2) get them rated,
(3) the data step: train the reward model on every comparison so far (rl), or snapshot this
round's comparisons (dpo), (4) the policy step: RL against the round's reward model, or DPO on
the round's comparisons, (5) evaluate on held-out prompts.

DPO rounds (`policy_method: dpo`), as Llama 3's post-training did: round r's DPO trains on round
r's comparisons only, pairs sampled from the policy of round r-1 (the reward-model path instead
trains on every comparison so far, which a reward model can use off-policy). Its reference
(`dpo_reference`): 'start' keeps the starting policy as pi_ref in every round, the RL path's KL
anchor, so both methods' KL-to-start and implicit reward are read on the same page; 'previous'
re-anchors each round on the policy it starts from. Where the RL path records the previous
reward model's accuracy on the round's fresh pairs, DPO records the previous DPO policy's
(its implicit reward): `rlhf.loop.folder.judge_of` reads either.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from rlhf.config import with_keys
from rlhf.dpo import implicit
from rlhf.dpo import train as dpo_stage
from rlhf.feedback.derive import to_pairs
from rlhf.feedback.pairs import draw_asks, sample_pairs
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.records import Correction
from rlhf.feedback.store import ComparisonStore
from rlhf.harness import distributed as dist
from rlhf.harness.folder import signal_received
from rlhf.harness.state import state_meta
from rlhf.kto import train as kto_stage
from rlhf.kto.data import split_rows, unpaired_rows
from rlhf.lm.generation import fit_prompts
from rlhf.lm.sampling import decode_rows
from rlhf.loop.active import most_disputed
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import (
    in_round,
    lines,
    policy_path,
    read_json,
    reward_model_path,
    round_dir,
    sft_done,
    start_path,
    write_json,
)
from rlhf.loop.models import Models
from rlhf.policy import train as policy_stage
from rlhf.policy.evaluate import evaluate_policy
from rlhf.policy.run import make_score_fn
from rlhf.preferences.data import read_feedback, split_by_group, split_pairs, training_pairs
from rlhf.prompts import load_prompts
from rlhf.raters import web
from rlhf.raters.scorers import get_scorer
from rlhf.raters.simulated import loop_rater
from rlhf.reward import train as reward_stage
from rlhf.reward.evaluate import evaluate as evaluate_reward_model
from rlhf.reward.model import score_texts
from rlhf.sft import train as sft_stage
from rlhf.sft.data import read_rows


def sample_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(1) Pairs from the policy of round r-1 on training prompts; with selection=disagreement
    (from round 2 on) the ones the previous reward-model ensemble disagrees on most."""
    active = cfg.selection == "disagreement" and r > 1
    n = cfg.pairs_per_round * (cfg.oversample if active else 1)
    model, tok = models.policy(r - 1)
    pool = fit_prompts(load_prompts(str(out / "prompts_train.jsonl")), tok,
                       model.args.max_seq_len, cfg.sampling, "training prompts")
    rng = random.Random(cfg.runtime.seed * 1000 + r)
    prompts = [pool[i % len(pool)] for i in rng.sample(range(max(n, len(pool))), n)]
    src = policy_path(cfg, out, r - 1)
    gen = torch.Generator(device=models.info.device).manual_seed(cfg.runtime.seed * 1000 + r)
    asks = draw_asks(n, cfg.mix.weights(), cfg.runtime.seed * 1000 + r)
    items = sample_pairs(model, tok, prompts, cfg.sampling, gen,
                         source={"model": src, "round": r - 1}, asks=asks, rank_k=cfg.rank_k,
                         scale=cfg.scale.as_item_scale(), rate_k=cfg.rate_k)
    if active:
        items = most_disputed(items, cfg.pairs_per_round, *models.reward(r - 1))
    for it in items:
        it.meta["round"] = r
    write_queue(round_dir(out, r) / "queue.jsonl", items)
    return {"pairs_from": src, "n_pairs": len(items), "selection": "active" if active
            else "random", "candidates": n, "asked": dict(Counter(it.ask for it in items))}


def rate_step(cfg: LoopConfig, out: Path, r: int, record: dict) -> bool:
    """(2) Ratings for every pair of the round's queue. A simulated rater answers at once; for
    people, print the `rlhf rate` command and wait (poll_seconds > 0) or return False; with
    `rater.kind: web`, serve the queue and wait until it is rated. A signal ends a wait
    (False)."""
    queue = round_dir(out, r) / "queue.jsonl"
    items = read_queue(queue)
    store = ComparisonStore(out / "comparisons.jsonl")
    if cfg.rater.kind == "simulated":
        rater, record["rater"] = loop_rater(  # the noise used is recorded, and reported
            cfg.rater.scorer, cfg.runtime.seed * 1000 + r, cfg.rater.temperature,
            cfg.rater.tie_band, cfg.rater.name or None)
        done = store.answered_item_ids(rater.name)  # a resumed step rates only the rest
        store.extend(rater.rate_many([it for it in items if it.id not in done]))
        record["answers"] = answer_counts(round_answers(store, r))
        return True
    if cfg.rater.kind == "web":  # the server runs until the round is rated
        rated = web.serve_until_rated(queue, store.path, web.rater_names(
            cfg.rater.name or "rater", None), port=cfg.rater.port, say=lambda m: print(
            m, file=sys.stderr, flush=True), poll_seconds=cfg.rater.poll_seconds or 2.0,
            stop=signal_received, max_note=cfg.rater.max_note_chars)
        if rated:
            record["answers"] = answer_counts(round_answers(store, r))
        return rated
    name = cfg.rater.name or "YOUR_NAME"
    while True:
        answered = store.answered_item_ids()
        missing = [it for it in items if it.id not in answered]
        if not missing:
            record["answers"] = answer_counts(round_answers(store, r))
            return True
        print(f"round {r}: {len(items) - len(missing)}/{len(items)} pairs rated. Rate them "
              f"with:\n  rlhf rate {queue} --rater {name} --store {store.path}\n"
              f"then run the same `rlhf loop` command again to resume.", file=sys.stderr)
        if cfg.rater.poll_seconds <= 0 or signal_received():
            return False
        time.sleep(cfg.rater.poll_seconds)


def round_answers(store: ComparisonStore, r: int) -> list:
    """Round r's answers of every kind in the store (notes left out)."""
    return [a for a in store.item_answers() if a.meta.get("round") == r]


def answer_counts(answers) -> dict[str, int]:
    """{kind: answers}, e.g. {"comparison": 40, "ranking": 20, "correction": 18}; skipped
    corrections (no edit made) as "correction_skipped"."""
    return dict(Counter(a.kind + ("_skipped" if getattr(a, "skipped", False) else "")
                        for a in answers))


def pair_counts(path: Path, data) -> dict[str, int]:
    """{origin: training pairs} that a pair-trained stage with data section `data` reads from
    `path` (before its validation split): what the reward model or DPO learned from."""
    pairs = training_pairs(read_feedback([str(path)]), data.ties, data.cant_tell, data.kinds)
    return dict(Counter(p.origin for p in pairs))


def sft_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(3a) Supervised fine-tuning of round r-1's policy on this round's corrections (the
    corrected texts as completions of their prompts), before the reward and policy steps; the
    round's policy step continues from its result. Skipped in a round without corrections.
    The batch is cut to the round's training rows when there are fewer."""
    info = models.info
    fixes = [a for a in round_answers(ComparisonStore(out / "comparisons.jsonl"), r)
             if isinstance(a, Correction) and not a.skipped]
    if not fixes:
        return {"sft": {"corrections": 0, "skipped": "no corrections this round"}}
    snap = snapshot(out, r, fixes, info, "corrections_used.jsonl")
    train_rows = split_by_group(read_rows([str(snap)])[0], cfg.sft.data.val_fraction,
                                cfg.runtime.seed)[0]
    if not train_rows:
        return {"sft": {"corrections": len(fixes), "skipped": "no training rows"}}
    scfg = fit_batch(with_keys(cfg.sft, {
        "out_dir": str(out / in_round(r, "sft")), "data.paths": [str(snap)],
        "model.init": policy_path(cfg, out, r - 1), "progress": False,
        "runtime": cfg.runtime}, who="the loop"), len(train_rows))
    if sft_done(out, r):  # a resumed round: its supervised step is already done
        summary = read_json(out / in_round(r, "sft", "summary.json"))
    else:
        hand = models.hand_sft(r)
        summary = sft_stage.train(scfg, hand)
        models.keep_sft(r, hand)
    return {"sft": {"corrections": len(fixes), "train_rows": summary.get("train_rows"),
                    "val_rows": summary.get("val_rows"), "steps": summary.get("steps"),
                    "policy": str(out / in_round(r, "sft", "policy")),
                    "metrics_file": in_round(r, "sft", "metrics.jsonl")}}


def fit_batch(stage_cfg, n_train: int):
    """A stage's config with its batch cut to `n_train` training rows (pairs) when a round has
    fewer than `train.batch_size` (a round with few corrections or ratings, say), without
    gradient accumulation; else `stage_cfg` itself."""
    if 0 < n_train < stage_cfg.train.batch_size:
        return with_keys(stage_cfg, {"train.batch_size": n_train, "train.micro_batch_size": 0},
                         who="the loop (fewer training rows than train.batch_size)")
    return stage_cfg


def snapshot(out: Path, r: int, comparisons, info: dist.DistInfo,
             name: str = "comparisons_used.jsonl") -> Path:
    """The comparisons a round's training uses, frozen in its folder (a resumed step trains
    on the same snapshot): the whole store so far (`comparisons` None) or the given ones."""
    snap = round_dir(out, r) / name
    if info.is_main and not snap.is_file():
        tmp = snap.with_name(snap.name + ".tmp")
        tmp.unlink(missing_ok=True)
        if comparisons is None:
            shutil.copyfile(out / "comparisons.jsonl", tmp)
        else:
            ComparisonStore(tmp).extend(comparisons)
        os.replace(tmp, snap)
    dist.barrier(info)
    return snap


def reward_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(3, rl) Train the reward model on every comparison so far (a snapshot of the store),
    from the previous round's (reward_init: previous) or afresh from the policy."""
    info = models.info
    snap = snapshot(out, r, None, info)
    used = ComparisonStore(snap).load()
    from_previous = cfg.reward_init == "previous" and r > 1
    init = str(reward_model_path(out, r - 1)) if from_previous else cfg.policy
    rcfg = with_keys(cfg.reward, {  # what the loop decides (loop.config.LOOP_SETS["reward"])
        "out_dir": str(out / in_round(r, "reward_model")), "data.paths": [str(snap)],
        "model.init": init, "runtime": cfg.runtime}, who="the loop")
    rcfg = fit_batch(rcfg, len(split_pairs(rcfg.data, rcfg.runtime.seed)[0]))
    new = [c for c in used if c.meta.get("round") == r]
    fresh = previous_accuracy(new, lambda pairs: evaluate_reward_model(
        *models.reward(r - 1), pairs)) if r > 1 and info.is_main else None
    hand = models.hand_reward(r, from_previous)
    metrics = reward_stage.train(rcfg, hand)
    models.keep_reward(r, hand)
    return {"comparisons": str(snap.relative_to(out)), "n_comparisons_total": len(used),
            "previous_rm_accuracy_on_new": fresh and fresh["accuracy"],
            "previous_rm_on_new": fresh, "n_comparisons_new": len(new),
            "reward_init": init, "reward_model": str(reward_model_path(out, r)),
            "reward_metrics_file": in_round(r, "reward_model", "metrics.jsonl"),
            "reward_metrics": metrics, "reward_pairs": pair_counts(snap, rcfg.data)}


def previous_accuracy(comparisons, evaluate) -> dict | None:
    """The previous round's judge (reward model, or DPO policy) on this round's fresh
    comparisons (pairs from the newer policy, never trained on): how well it judged what the
    policy was becoming. {"accuracy", "hits", "n"} (n: pairs with a clear preference)."""
    pairs = to_pairs(comparisons, ties="drop")
    if not pairs:
        return None
    res = evaluate(pairs)
    n, acc = res.get("clear_pairs", 0), res.get("accuracy")
    return {"accuracy": acc, "hits": round(acc * n, 6), "n": n} if n else None


def dpo_data_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(3, dpo) Snapshot this round's comparisons for its DPO; the previous round's DPO
    policy's implicit-reward accuracy on them."""
    info = models.info
    store = ComparisonStore(out / "comparisons.jsonl")
    every = store.load()
    new = [c for c in every if c.meta.get("round") == r]
    snap = snapshot(out, r, round_answers(store, r), info)  # every kind: its pairs train
    fresh = None
    if r > 1 and info.is_main:
        path = policy_path(cfg, out, r - 1)
        policy, tok = models.policy(r - 1)
        fresh = previous_accuracy(new, lambda pairs: implicit.evaluate_models(
            policy, models.dpo_reference(r - 1), tok, implicit.read_meta(path), pairs,
            device=info.device))
    return {"comparisons": str(snap.relative_to(out)), "n_comparisons_total": len(every),
            "n_comparisons_new": len(new), "n_comparisons_used": len(new),
            "previous_policy_accuracy_on_new": fresh and fresh["accuracy"],
            "previous_policy_on_new": fresh}


def kto_data_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(3, kto) Snapshot this round's answers for its KTO; the unpaired rows they give
    (`kto.data.origins`: ratings and "both bad" comparisons by default)."""
    store = ComparisonStore(out / "comparisons.jsonl")
    snap = snapshot(out, r, round_answers(store, r), models.info)
    rows = unpaired_rows(read_feedback([str(snap)]), cfg.kto.data.origins)
    n_d = sum(row.label for row in rows)
    return {"comparisons": str(snap.relative_to(out)),
            "kto_rows": {"desirable": n_d, "undesirable": len(rows) - n_d}}


def kto_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(4, kto) KTO of the round's starting policy on this round's unpaired rows, the
    starting policy as the reference."""
    init = start_path(cfg, out, r)
    kcfg = with_keys(cfg.kto, {  # what the loop decides (loop.config.LOOP_SETS["kto"])
        "out_dir": str(out / in_round(r, "policy_train")),
        "data.paths": [str(out / in_round(r, "comparisons_used.jsonl"))],
        "model.init": init, "model.reference": cfg.policy, "progress": False,
        "runtime": cfg.runtime}, who="the loop")
    kcfg = fit_batch(kcfg, len(split_rows(kcfg.data, kcfg.runtime.seed)[0]))
    hand = models.hand_policy(r, "start")
    summary = kto_stage.train(kcfg, hand)
    models.keep_policy(r, hand)
    return {"policy_init": init, "policy": policy_path(cfg, out, r),
            "policy_metrics_file": in_round(r, "policy_train", "metrics.jsonl"),
            "policy_gold_file": None, "policy_metrics": summary}


def dpo_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(4, dpo) DPO of the previous round's policy on this round's comparisons, the reference
    by `dpo_reference` (the start, or the policy it starts from)."""
    init = start_path(cfg, out, r)
    ref = cfg.policy if cfg.dpo_reference == "start" else init
    dcfg = with_keys(cfg.dpo, {  # what the loop decides (loop.config.LOOP_SETS["dpo"])
        "out_dir": str(out / in_round(r, "policy_train")),
        "data.paths": [str(out / in_round(r, "comparisons_used.jsonl"))],
        "model.init": init, "model.reference": ref, "progress": False,
        "runtime": cfg.runtime}, who="the loop")
    dcfg = fit_batch(dcfg, len(split_pairs(dcfg.data, dcfg.runtime.seed)[0]))
    hand = models.hand_policy(r, cfg.dpo_reference)
    summary = dpo_stage.train(dcfg, hand)
    models.keep_policy(r, hand)
    return {"policy_init": init, "policy": policy_path(cfg, out, r), "dpo_reference": ref,
            "policy_metrics_file": in_round(r, "policy_train", "metrics.jsonl"),
            "dpo_metrics_file": in_round(r, "policy_train", "metrics.jsonl"),
            "policy_gold_file": None, "policy_metrics": summary,
            "dpo_pairs": pair_counts(out / in_round(r, "comparisons_used.jsonl"), dcfg.data)}


def policy_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(4, rl) Fine-tune the policy of round r-1 against this round's reward model, KL to the
    start. The gold score of every step's samples (all ranks') goes to
    policy_train/gold.jsonl."""
    info, rd = models.info, round_dir(out, r)
    init = start_path(cfg, out, r)
    pcfg = with_keys(cfg.rl, {  # what the loop decides (loop.config.LOOP_SETS["rl"])
        "policy": init, "reference": cfg.policy, "out_dir": str(rd / "policy_train"),
        "reward.kind": "model", "reward.path": str(reward_model_path(out, r)),
        "prompts.path": str(out / "prompts_train.jsonl"), "prompts.hold_out_every": 0,
        "prompts.eval_prompts": 0, "sampling": cfg.sampling, "runtime": cfg.runtime},
        who="the loop")
    hand = models.hand_policy(r, "start", with_reward=True)
    score_fn = None
    if cfg.eval.gold_scorer:
        gold = get_scorer(cfg.eval.gold_scorer)
        gold_log = GoldLog(rd / "policy_train") if info.is_main else None
        tok = hand.start[1]
        reward = make_score_fn(pcfg.reward, tok, info.device, hand.reward)

        def score_fn(gen, texts):
            golds = gold([t.strip() for t in decode_rows(tok, gen, include_prompt=False)])
            golds = dist.all_gather_list(golds, info)  # every rank's samples
            if gold_log is not None:
                gold_log.write(sum(golds) / len(golds))
            return reward(gen, texts)
    summary = policy_stage.train(pcfg, score_fn, hand)
    models.keep_policy(r, hand)
    return {"policy_init": init, "policy": policy_path(cfg, out, r),
            "policy_metrics_file": in_round(r, "policy_train", "metrics.jsonl"),
            "policy_gold_file": in_round(r, "policy_train", "gold.jsonl") if score_fn else None,
            "policy_metrics": summary}


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


def eval_step(cfg: LoopConfig, out: Path, r: int, models: Models) -> dict:
    """(5) Gold score, KL to the start and the round's reward (the reward model's, or the DPO
    policy's implicit reward) win rate on held-out prompts."""
    model, tok = models.policy(r)
    prompts = [p for p in fit_prompts(load_prompts(str(out / "prompts_eval.jsonl")), tok,
                                      model.args.max_seq_len, cfg.sampling, "eval prompts")
               for _ in range(cfg.eval.samples_per_prompt)]
    reward = start_texts = None
    if r > 0 and cfg.policy_method == "dpo":  # the round's implicit reward (its reference)
        meta = implicit.read_meta(policy_path(cfg, out, r))
        reward = implicit.text_scorer(model, models.dpo_reference(r), tok, meta["beta"],
                                      meta["max_len"])
    elif r > 0 and cfg.policy_method == "rl":  # kto: no judge of the round
        rm, rm_tok = models.reward(r)
        reward = lambda ps, ts: score_texts(rm, rm_tok, ps, ts).tolist()  # noqa: E731
    if r > 0:
        start_texts = read_json(out / in_round(0, "eval.json"))["texts"]
    golds = [None] * len(prompts)  # each sample's gold, from the evaluation's one pass
    gold = None
    if cfg.eval.gold_scorer:
        scorer = get_scorer(cfg.eval.gold_scorer)

        def gold(texts):
            golds[:] = scorer(texts)
            return golds
    ev = evaluate_policy(model, models.reference(), tok, prompts, cfg.sampling, cfg.eval.seed,
                         gold, reward, start_texts)
    if r == 0:  # the start against itself, for the plots
        ev.update(reward_gain=0.0, win_rate=0.5)
    write_json(round_dir(out, r) / "eval.json", ev)
    md = [f"# Round {r}: `{policy_path(cfg, out, r)}` on held-out prompts (seed "
          f"{cfg.eval.seed})", ""]
    md += [f"**{p}** {t}" + (f"  *(gold {g:.2f})*" if g is not None else "") + "\n"
           for p, t, g in zip(prompts, ev["texts"], golds)]
    (round_dir(out, r) / "samples.md").write_text("\n".join(md))
    return {k: v for k, v in ev.items()
            if k not in ("texts", "sample_rewards", "sample_rewards_start")}
