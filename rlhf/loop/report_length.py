"""The loop report's length audit (`rlhf report`, sections of rlhf/loop/report.py):

- the policy, round by round: mean response length (words) of the evaluation samples
  (`round_RR/eval.json` "texts": the same held-out prompts and seed every round) beside the
  reward and the gold score, and the share of the reward gain over the start that length
  explains (`rlhf.preferences.length.length_share_of_gain`: the slope of reward on length
  within the round's and the start's samples, times the change in mean length, over the gain;
  the round's reward model scores both sets, `sample_rewards` and `sample_rewards_start`).
  A round is flagged when its gain is positive and at least `LENGTH_SHARE_WARNING` (one half)
  of it is length: the policy then mostly learned to write longer (or shorter) to please the
  reward model;
- the reward model, round by round: its held-out accuracy with the 95% bootstrap interval over
  prompts, the longer-wins rule, their paired difference with its interval, the
  length-controlled accuracy and the beyond-length p-value (`rlhf.preferences.length`, kept in
  the round's reward-model summary as `last_val_*`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.loop.folder import in_round
from rlhf.preferences.length import LENGTH_SHARE_WARNING, length_share_of_gain


def num(v, spec: str = ".3f") -> str:
    """A number for a table cell; empty when there is none."""
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def with_ci(v, ci, spec: str = ".3f") -> str:
    """'0.641 [0.60, 0.68]', the bare value without an interval."""
    if not num(v):
        return ""
    short = "+.2f" if spec.startswith("+") else ".2f"
    return num(v, spec) + (f" [{ci[0]:{short}}, {ci[1]:{short}}]" if ci else "")


def read_eval(run: Path, r: int) -> dict:
    """Round r's eval.json (every evaluation sample), or {} when the run has none."""
    path = run / in_round(r, "eval.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def policy_length_rows(run: Path, rounds: list[dict]) -> list[dict]:
    """Per round: mean length (words), reward, gain, gold and the length share of the gain."""
    start = words(read_eval(run, 0).get("texts") or [])
    out = []
    for rec in rounds:
        ev, r = read_eval(run, rec["round"]), rec.get("eval") or {}
        lengths = words(ev.get("texts") or [])
        row = {"round": rec["round"], "length": sum(lengths) / len(lengths) if lengths
               else r.get("length"), "reward": r.get("reward"), "gain": r.get("reward_gain"),
               "gold": r.get("gold")}
        now, before = ev.get("sample_rewards"), ev.get("sample_rewards_start")
        if rec["round"] > 0 and now and before and len(now) == len(lengths) \
                and len(before) == len(start):
            row.update(length_share_of_gain(now, lengths, before, start))
            row["warn"] = row["share"] is not None and row["share"] >= LENGTH_SHARE_WARNING
        out.append(row)
    return out


def policy_length_section(run: Path, rounds: list[dict]) -> list[str]:
    """The per-round table and the warnings (see the module docstring)."""
    rows = policy_length_rows(run, rounds)
    lines = ["Mean response length (words) of each round's evaluation samples beside the reward "
             "and gold; length change and gain against the starting policy on the same prompts. "
             "explained: the part of the reward gain that length predicts (slope of reward on "
             "length within the round's and the start's samples, one reward model scoring both, "
             "times the length change); share: explained / gain, flagged when the gain is "
             f"positive and the share is at least {LENGTH_SHARE_WARNING:g}.", "",
             "| round | length | reward | reward gain | gold | length change | reward per word "
             "| explained by length | share of gain |", "|---" * 9 + "|"]
    for x in rows:
        share = num(x.get("share"), ".2f") + (" **mostly length**" if x.get("warn") else "")
        lines.append(f"| {x['round']} | {num(x['length'], '.1f')} | {num(x['reward'])} | "
                     f"{num(x['gain'], '+.3f')} | {num(x['gold'])} | "
                     f"{num(x.get('length_change'), '+.1f')} | {num(x.get('slope'), '.4f')} | "
                     f"{num(x.get('explained'), '+.3f')} | {share} |")
    warned = [x["round"] for x in rows if x.get("warn")]
    if warned:
        lines += ["", f"**Warning: in rounds {', '.join(map(str, warned))} the reward gain is "
                  "mostly length.** The policy learned to change its length more than anything "
                  "else the reward model values; check the gold column and the reward model's "
                  "beyond-length test below."]
    elif not any("share" in x for x in rows):
        lines += ["", "(No per-sample rewards in the rounds' eval.json: the share needs a run "
                  "of this version with a reward model.)"]
    return lines


def reward_length_section(rounds: list[dict]) -> list[str]:
    """Per round, the reward model's held-out accuracy against the length rules."""
    rows = [(r["round"], r.get("reward_metrics") or {}) for r in rounds]
    rows = [(n, m) for n, m in rows if "last_val_accuracy_ci95" in m]
    if not rows:
        return []
    lines = ["Each round's reward model on its held-out prompts' pairs, [95% interval, bootstrap "
             "over prompts]: accuracy, the longer-wins rule, the reward model minus the rule on "
             "the same pairs, the length-controlled accuracy (pairs the longer and the shorter "
             "side won weighing equally: a length-only scorer gets 0.5) and the p-values of the "
             "reward term in a logistic regression of the human choice on the reward and "
             "length differences (small: the reward model knows something beyond length; the "
             "likelihood-ratio test treats pairs as independent, the Wald test over prompts "
             "does not); the correlation of its score with length over the held-out responses "
             "(a length-decorrelated reward model, `reward.model.length_head`, holds it near "
             "0).", "",
             "| round | prompts | accuracy | longer wins | RM - longer wins | shorter wins "
             "| length-controlled | beyond-length p (LR; over prompts) | score-length corr |",
             "|---" * 9 + "|"]
    cols = [("accuracy", ".3f"), ("length_rule_accuracy", ".3f"),
            ("minus_longer_rule", "+.3f"), ("shorter_rule_accuracy", ".3f"),
            ("length_controlled_accuracy", ".3f")]
    for n, m in rows:
        cells = [with_ci(m.get(f"last_val_{k}"), m.get(f"last_val_{k}_ci95"), spec)
                 for k, spec in cols]
        lines.append(f"| {n} | {num(m.get('last_val_prompts'), 'd')} | " + " | ".join(cells)
                     + f" | {num(m.get('last_val_beyond_length_p'), '.2g')}; "
                     f"{num(m.get('last_val_beyond_length_p_robust'), '.2g')} | "
                     f"{num(m.get('last_val_score_length_corr'), '+.2f')} |")
    return lines


def length_sections(run: Path, rounds: list[dict]) -> list[str]:
    """The report's "Length audit" section (Markdown lines)."""
    rm = reward_length_section(rounds)
    return ["## Length audit", "", "### The policy: length, reward and gold", "",
            *policy_length_section(run, rounds), "",
            *(["### The reward model against length", "", *rm, ""] if rm else [])]
