"""`rlhf loop CONFIG [section.key=value ...]`: rounds of human (or simulated) feedback.

Each round r = 1..R: (1) sample pairs from the current policy, (2) get them rated (a named
simulated rater, or people through `rlhf rate`), (3) train the reward model on all
comparisons so far, (4) fine-tune the policy against it (KL to the starting policy),
(5) evaluate on fresh samples from held-out prompts. Round 0 is the starting policy,
evaluated only. With `policy_method: dpo`, (3) snapshots the round's comparisons and (4) is
DPO on them (`rlhf.loop.steps`); with `policy_method: kto`, KTO on the round's ratings. When
the round's items ask for corrections (`mix.correct`), a supervised step on them runs first,
in (3), and the round's policy step continues from its result. The loop ends by printing
one JSON line: gold_start, gold_end, kl, report. Models stay in memory from step to step
(`rlhf.loop.models`): each is read from its folder only when this process does not hold it
(its first use, a restart).

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
                             (dpo, kto: the round's own answers)
        corrections_used.jsonl, sft/  the round's corrections and the supervised step on
                             them (sft/policy/: where the policy step starts), when any
        reward_model/        the reward-model training folder (metrics.jsonl, state/,
                             model/: the round's reward model)
        policy_train/        the policy training folder (metrics.jsonl, state/, policy/: the
                             round's policy; gold.jsonl: the gold score of each step)
        eval.json            evaluation of this round's policy (samples.md: its samples)
        record.json          which policy made the pairs, which comparisons trained which
                             reward model, the paths of both models and the metrics
    report/                  `rlhf report`: report.md and PNG plots

With `mode: async` (rater.kind web) rating and training overlap: the page serves one growing
queue (`queue.jsonl`) for the whole run, a round's rate step waits for enough new answers and
records its cut (`round_RR/cut.json`) before it trains on every answer so far
(`rlhf.loop.live`).

The configuration (`LoopConfig`) lives in `rlhf.loop.config`.

Under torchrun (`torchrun --nproc-per-node N -m rlhf loop CONFIG`) the training steps
(reward, policy) run on every process with DDP; sampling pairs, rating, evaluation and every
file of the run folder are rank 0's, the other ranks waiting at a barrier after each step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rlhf.config import parse_cli
from rlhf.harness import distributed as dist
from rlhf.harness.folder import Interrupted, held_folder, signal_received, stop_signal
from rlhf.harness.progress import Progress
from rlhf.harness.runtime import setup
from rlhf.harness.trackers import Trackers
from rlhf.lm.cards import set_metrics
from rlhf.loop import steps
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import (
    in_round,
    init_run,
    judge_of,
    lines,
    next_step,
    policy_path,
    read_json,
    rebuild_rounds,
    round_dir,
    write_json,
)
from rlhf.loop.live import LiveRounds, live_rounds
from rlhf.loop.models import Models
from rlhf.loop.report import write_report
from rlhf.loop.watch import announce, steps_done, stop_here, watch_round
from rlhf.prompts import load_prompts

# ----------------------------------------------------------------------------- the loop


def run(cfg: LoopConfig) -> dict:
    """Run (or resume) the loop to its last round; returns the final summary (on rank 0)."""
    info = dist.init(cfg.runtime.device)
    setup(cfg.runtime)
    with (held_folder(Path(cfg.out_dir), info.is_main),  # one run per folder, signals caught
          Trackers(cfg.runtime.report_to if info.is_main else (), cfg.out_dir) as board,
          live_rounds(cfg, info, Path(cfg.out_dir)) as live):  # mode=async: the page, always
        return rounds(cfg, info, board, live)


def rounds(cfg: LoopConfig, info: dist.DistInfo, board: Trackers,
           live: LiveRounds | None = None) -> dict:
    """The rounds from where the run folder says the loop is; each finished round's record
    also to the trackers of `runtime.report_to` (`board`, rank 0's; step = the round). With
    `live` (mode=async) the sample and rate steps are its own (`rlhf.loop.live`)."""
    # 1. the run folder: a fresh one, or where a killed run stopped; the models in memory
    main, out = info.is_main, Path(cfg.out_dir)
    state = dist.from_main(init_run(cfg, out) if main else None, info)
    models = Models(cfg, out, info)
    record: dict = read_json(out / "round_current.json", {}) if main else {}
    bar = Progress("loop", 1 + 5 * cfg.rounds, steps_done(state), enabled=main, every_s=1e9)
    # 2. one step at a time; each step's outputs are in place before the state advances
    while (state["round"], state["step"]) != (cfg.rounds, "eval"):
        r, step = next_step(state)
        t0 = time.time()
        if main:
            bar.write(f"round {r}: {step}")
        record = do_step(cfg, out, r, step, models, record, live)
        if record is None:
            if sig := stop_signal(info):  # the wait for people was ended by a signal
                raise Interrupted(sig, f"while round {r}'s pairs wait for ratings (every "
                                  f"answer so far is kept) in {out}")
            return {"status": "waiting for ratings", "round": r,
                    "queue": str(out / in_round(r, "queue.jsonl"))}
        state = {"round": r, "step": step}
        if main:
            record.setdefault("seconds", {})[step] = round(time.time() - t0, 1)
            if step == "eval":
                write_json(round_dir(out, r) / "record.json", record)
                rebuild_rounds(out)
                board.log(record, r, skip="round")
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


def do_step(cfg: LoopConfig, out: Path, r: int, step: str, models: Models, record: dict,
            live: LiveRounds | None = None) -> dict | None:
    """(2) One step of round r, by the policy method; the round's record so far, or None when
    the pairs still wait for ratings. Sampling, rating and evaluation are rank 0's."""
    info, method = models.info, cfg.policy_method
    if live is not None and step in ("sample", "rate"):  # mode=async (one process)
        return live.step(r, step, record, signal_received)
    if step == "sample" and info.is_main:
        return {"round": r, **steps.sample_step(cfg, out, r, models)}
    if step == "rate":
        return record if dist.from_main(steps.rate_step(cfg, out, r, record)
                                        if info.is_main else None, info) else None
    if step == "reward":
        if cfg.mix.correct > 0:  # corrections: a supervised step before the other training
            record.update(steps.sft_step(cfg, out, r, models))
        data_step = {"rl": steps.reward_step, "dpo": steps.dpo_data_step,
                     "kto": steps.kto_data_step}[method]
        record.update(data_step(cfg, out, r, models))
    elif step == "policy":
        policy_step = {"rl": steps.policy_step, "dpo": steps.dpo_step,
                       "kto": steps.kto_step}[method]
        record.update(policy_step(cfg, out, r, models))
        if live is not None:
            live.policy_done(r)  # the queue is refilled from it from now on
    elif step == "eval" and info.is_main:
        return eval_record(cfg, out, r, models, record)
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


def eval_record(cfg: LoopConfig, out: Path, r: int, models: Models, record: dict) -> dict:
    """(5) as a round record: the evaluation, with the reward model's held-out accuracy and
    the previous reward model's accuracy on this round's pairs beside it."""
    record.setdefault("round", r)
    record.setdefault("policy", policy_path(cfg, out, r))
    record["eval"] = steps.eval_step(cfg, out, r, models)
    metrics = record.get("policy_metrics" if cfg.policy_method == "dpo" else "reward_metrics")
    acc = (metrics or {}).get("last_val_accuracy")
    if isinstance(acc, (int, float)):
        record["eval"]["rm_accuracy"] = acc
    previous = judge_of(record)[1]
    if previous:
        record["eval"]["prev_rm_on_policy_accuracy"] = previous["accuracy"]
    if r > 0:
        prompts = [p for p in load_prompts(str(out / "prompts_eval.jsonl"))
                   for _ in range(cfg.eval.samples_per_prompt)]
        watch_round(cfg, out, r, record, prompts, models)
        set_metrics(policy_path(cfg, out, r), {f"loop_{k}": v for k, v in record["eval"].items()},
                    keep=True)  # the round's policy card: the loop's held-out evaluation too
    return record


def cli(argv: list[str]) -> int:
    cfg: LoopConfig = parse_cli(LoopConfig, "rlhf loop", __doc__, argv)
    summary = run(cfg)
    info = dist.init(cfg.runtime.device)
    if info.is_main:
        if "report" in summary:
            print(f"report: {summary['report']}", file=sys.stderr)
        print(json.dumps(summary), flush=True)
    return 3 if summary.get("status") == "waiting for ratings" else 0  # rlhf.cli.main: the end
