"""`rlhf report RUN_DIR`: a self-contained Markdown report of a `rlhf loop` run folder.

It reads what the loop wrote (layout: see rlhf/loop/cycle.py) and writes, inside the run folder,
`report/report.md` and PNG plots beside it (more sections: report_length.py, live_stats.py):
- `rounds.png`: per round (0 = the starting policy) the proxy reward (reward-model score of
  fresh samples), the win rate against the starting policy, KL to the start, the gold score
  (the simulated rater's own scorer) and the reward model's held-out accuracy; shares with
  their 95% Wilson intervals as error bars;
- `steps.png`: per policy-training step, every round one after the other: reward, KL and
  (where logged) the gold score; dashed lines mark round boundaries;
- `frontier.png`: the KL-vs-reward frontier (per step and per round) and KL vs gold,
  where reward hacking shows as proxy reward rising while gold stays flat or falls;
- `signals.png`: the over-optimisation signals that need no gold, per policy step (length,
  share of empty responses, KL per token, the reward-model ensemble's disagreement), with the
  steps where the rule (rlhf.policy.signals) warned marked; a section lists every warning;
- a table of sample texts from each round side by side (same held-out prompts, same seed);
- the raters' notes in the run's store (`comparisons.jsonl`): count per rater and the latest
  few, with the round whose queue held the item (escaped; cut for display only).
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path

import matplotlib
import yaml

from rlhf.feedback.intervals import show_share
from rlhf.feedback.kind_stats import notes_summary, shorten
from rlhf.feedback.store import ComparisonStore
from rlhf.loop import live_stats, report_length
from rlhf.loop.folder import judge_of, round_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ROUND_KEYS = [  # (key in a round's "eval" record, axis title)
    ("reward_gain", "proxy reward gain over start (RM)"),
    ("win_rate", "win rate vs start (reward model)"),
    ("kl", "KL to the starting policy"),
    ("gold", "gold score (rater's scorer)"),
    ("rm_accuracy", "reward model held-out accuracy"),
    ("prev_rm_on_policy_accuracy", "previous reward model on this round's new pairs"),
]
STEP_KEYS = [  # (candidate keys in a policy-training metrics row, axis title)
    (("reward", "reward_mean", "score"), "reward"),
    (("kl", "kl_mean", "kl_ref"), "KL to reference"),
    (("gold", "gold_mean"), "gold score"),
]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick(row: dict, keys: tuple[str, ...]):
    """The first of `keys` that `row` has with a number, else None."""
    for k in keys:
        v = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def step_rows(run: Path, rounds: list[dict]) -> list[dict]:
    """Policy-training metrics of every round, concatenated with a global step index."""
    out, offset = [], 0
    for rec in rounds:
        path, gold_path = rec.get("policy_metrics_file"), rec.get("policy_gold_file")
        rows = read_jsonl(run / path) if path else []
        golds = {g["step"]: g["gold"] for g in (read_jsonl(run / gold_path) if gold_path else [])}
        rows = [{**r, "gold": golds[r["step"]]} if r.get("step") in golds else r for r in rows]
        rows = [r for r in rows if pick(r, STEP_KEYS[0][0]) is not None
                or pick(r, STEP_KEYS[1][0]) is not None]
        for i, r in enumerate(rows):
            out.append({**r, "round": rec["round"], "global_step": offset + i})
        offset += len(rows)
    return out


def reward_rows(run: Path, rounds: list[dict]) -> list[dict]:
    """Reward-model training metrics (accuracy per step) of every round, concatenated."""
    out = []
    for rec in rounds:
        path = judge_of(rec)[0]
        rows = [r for r in (read_jsonl(run / path) if path else []) if "accuracy" in r]
        out += [{**r, "round": rec["round"], "global_step": len(out) + i}
                for i, r in enumerate(rows)]
    return out


# ----------------------------------------------------------------------------- plots


def plot_rounds(rounds: list[dict], path: Path) -> Path:
    cols = 3
    rows = -(-len(ROUND_KEYS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, ROUND_KEYS):
        pts = [(r["round"], r.get("eval", {}).get(key)) for r in rounds]
        pts = [(x, y) for x, y in pts if isinstance(y, (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o")
        cis = [(r["round"], r["eval"][key], r["intervals"][key]["ci95"]) for r in rounds
               if key in (r.get("intervals") or {}) and isinstance(r["eval"].get(key), float)]
        if cis:  # 95% Wilson intervals of the shares
            ax.errorbar([c[0] for c in cis], [c[1] for c in cis], fmt="none", ecolor="C0",
                        alpha=0.5, capsize=3, yerr=[[c[1] - c[2][0] for c in cis],
                                                    [c[2][1] - c[1] for c in cis]])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round (0 = start)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_steps(steps: list[dict], rm_steps: list[dict], path: Path) -> Path:
    n = len(STEP_KEYS) + 1
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.2))
    panels = [(steps, keys, title, "policy step (all rounds)") for keys, title in STEP_KEYS]
    panels.append((rm_steps, ("accuracy",), "reward model accuracy (training batches; "
                   "dots: held out)", "reward-model step (all rounds)"))
    for ax, (rows, keys, title, xlabel) in zip(axes, panels):
        pts = [(s["global_step"], pick(s, keys)) for s in rows]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        val = [(s["global_step"], s["val_accuracy"]) for s in rows
               if keys == ("accuracy",) and isinstance(s.get("val_accuracy"), float)]
        if val:
            ax.plot(*zip(*val), "o", color="C3")
        for a, b in zip(rows, rows[1:]):
            if a["round"] != b["round"]:
                ax.axvline(b["global_step"], ls="--", color="grey", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_frontier(rounds: list[dict], steps: list[dict], path: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    pts = [(pick(s, STEP_KEYS[1][0]), pick(s, STEP_KEYS[0][0]), s["round"]) for s in steps]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if pts:
        sc = ax1.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts],
                         s=8, cmap="viridis", alpha=0.6)
        fig.colorbar(sc, ax=ax1, label="round")
    ax1.set_title("KL vs reward (policy-training steps)", fontsize=9)
    ax1.set_xlabel("KL")
    ax1.set_ylabel("reward")
    for key, label, marker in (("reward_gain", "proxy reward gain", "o"),
                               ("gold", "gold score", "s")):
        xy = [(r.get("eval", {}).get("kl"), r.get("eval", {}).get(key), r["round"])
              for r in rounds]
        xy = [p for p in xy if isinstance(p[0], (int, float)) and isinstance(p[1], (int, float))]
        if xy:
            ax2.plot([p[0] for p in xy], [p[1] for p in xy], marker=marker, label=label)
            for x, y, n in xy:
                ax2.annotate(str(n), (x, y), fontsize=7, xytext=(3, 3),
                             textcoords="offset points")
    ax2.set_title("KL vs score per round (fresh samples)", fontsize=9)
    ax2.set_xlabel("KL to start")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


SIGNAL_KEYS = [("length", "response length (tokens)"), ("empty", "share of empty responses"),
               ("kl_per_token", "KL per token (nats)"),
               ("disagreement", "reward-model ensemble disagreement")]


def plot_signals(steps: list[dict], path: Path) -> Path:
    """The no-gold signals per policy step; red crosses where the rule warned."""
    fig, axes = plt.subplots(1, len(SIGNAL_KEYS), figsize=(4.2 * len(SIGNAL_KEYS), 3.2))
    for ax, (key, title) in zip(axes, SIGNAL_KEYS):
        pts = [(s["global_step"], s[key]) for s in steps if isinstance(s.get(key), float)]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        bad = [(s["global_step"], s[key]) for s in steps
               if s.get("warnings") and isinstance(s.get(key), float)]
        if bad:
            ax.plot(*zip(*bad), "x", color="C3", label="rule warns")
            ax.legend(fontsize=7)
        for a, b in zip(steps, steps[1:]):
            if a["round"] != b["round"]:
                ax.axvline(b["global_step"], ls="--", color="grey", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("policy step (all rounds)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- markdown


def cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))


def value_cell(r: dict, key: str) -> str:
    """A round's figure; a share with its 95% interval and count where the record has them."""
    v, ci = r.get("eval", {}).get(key), (r.get("intervals") or {}).get(key)
    return show_share(v, ci["n"], ci["ci95"]) if ci else fmt(v)


def round_table(run: Path, rounds: list[dict]) -> list[str]:
    keys = [k for k, _ in ROUND_KEYS] + ["length"]
    lines = ["| round | policy | comparisons | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 3) + "|"]
    for r in rounds:
        policy = str(r.get("policy", ""))
        if policy.startswith(str(run) + "/"):
            policy = policy[len(str(run)) + 1:]
        lines.append(f"| {r['round']} | `{policy}` | {fmt(r.get('n_comparisons_total'))} | "
                     + " | ".join(value_cell(r, k) for k in keys) + " |")
    return lines


def counts(d: dict | None) -> str:
    """{"ranking": 2, "comparison": 4} -> "comparison 4, ranking 2" (by name)."""
    return ", ".join(f"{k} {v}" for k, v in sorted((d or {}).items()))


def kinds_table(rounds: list[dict]) -> list[str]:
    """Per round: the items asked, the answers of each kind that came in, and what each stage
    learned from them (the supervised step's corrections and rows, the reward model's or DPO's
    pairs by the kind of answer they came from, KTO's rows). Empty when every item compared."""
    if all(set(r.get("asked") or {}) <= {"compare"} for r in rounds):
        return []
    lines = ["| round | asked | answers | SFT on corrections | pairs (reward model / DPO) | "
             "KTO rows |", "|---" * 6 + "|"]
    for r in rounds[1:]:
        sft = r.get("sft") or {}
        sft_cell = (f"{sft.get('corrections', 0)} corrections, {sft['train_rows']} train / "
                    f"{sft['val_rows']} val rows, {sft['steps']} steps" if "train_rows" in sft
                    else sft.get("skipped", ""))
        pairs = r.get("reward_pairs") or r.get("dpo_pairs")
        lines.append(f"| {r['round']} | {cell(counts(r.get('asked')))} | "
                     f"{cell(counts(r.get('answers')))} | {cell(sft_cell)} | "
                     f"{cell(counts(pairs))} | {cell(counts(r.get('kto_rows')))} |")
    return ["## What each kind of answer trained", "",
            "Answers that came in each round, and what each stage learned from: the supervised "
            "step on the round's corrections (before the other steps; the policy continues from "
            "it), the pairs the reward model (all rounds so far) or DPO (the round's) trained on "
            "by the kind of answer they came from (a K-ranking gives K choose 2 pairs, together "
            "weighing one), and KTO's unpaired rows (the round's ratings and \"both bad\").",
            "", *lines, ""]


def who_rates(run: Path, rounds: list[dict]) -> str:
    """The rater, its noise as used, and the gold scorer, in one sentence."""
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() \
        else {}
    used = next((r["rater"] for r in rounds if r.get("rater")), None)
    kind = (cfg.get("rater") or {}).get("kind", "simulated")
    if used and "temperature" in used:
        rater = (f"simulated rater `{used['scorer']}` (Bradley-Terry temperature "
                 f"{used['temperature']:g}, tie band {used['tie_band']:g}, in the scorer's units)")
    elif used:
        rater = f"rater class `{used['scorer']}`"
    else:
        rater = "people" if kind == "human" else "none recorded"
    gold = (cfg.get("eval") or {}).get("gold_scorer") or ""
    return f"Raters: {rater}. Gold scorer: " + (f"`{gold}`." if gold else "none.")


def signals_section(rounds: list[dict]) -> list[str]:
    """The no-gold signals per round against the start, and every warning."""
    keys = ["length", "empty", "kl_per_token", "disagreement"]
    lines = ["Signals that need no gold (rule: `rlhf.policy.signals`; thresholds: `rl.guard`): "
             "on each round's evaluation samples against the starting policy's (disagreement: "
             "the round's reward-model ensemble on both), the round's policy training step by "
             "step, and the previous reward model on the new policy's pairs.", "",
             "| round | " + " | ".join(f"{k} (start)" for k in keys)
             + " | previous RM on new pairs | warnings |", "|---" * (len(keys) + 3) + "|"]
    for r in rounds[1:]:
        sig = r.get("signals") or {}
        now, start = sig.get("round", {}), sig.get("start", {})
        cells = [f"{fmt(now.get(k))} ({fmt(start.get(k))})" if k in now else "" for k in keys]
        prev = value_cell(r, "prev_rm_on_policy_accuracy")
        warn = "; ".join(cell(w, 200) for w in r.get("warnings", [])) or "none"
        lines.append(f"| {r['round']} | " + " | ".join(cells) + f" | {prev} | {warn} |")
    warned = [r["round"] for r in rounds if r.get("warnings")]
    lines += ["", f"**Warnings in rounds {', '.join(map(str, warned))}.**" if warned
              else "No warnings.", "", "![signals per step](signals.png)"]
    return lines


def samples_table(rounds: list[dict], n: int = 4) -> list[str]:
    """Prompt | round 0 | round 1 | ...: the same held-out prompts, sampled with the same seed."""
    cols = [r for r in rounds if r.get("eval", {}).get("samples")]
    if not cols:
        return ["(no samples recorded)"]
    lines = ["| prompt | " + " | ".join(f"round {r['round']}" for r in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for i, s in enumerate(cols[0]["eval"]["samples"][:n]):
        row = [cell(s["prompt"], 120)]
        for r in cols:
            ss = r["eval"]["samples"]
            if i < len(ss):
                gold = ss[i].get("gold")
                tag = f" *(gold {gold:.2f})*" if isinstance(gold, (int, float)) else ""
                row.append(cell(ss[i]["text"]) + tag)
            else:
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def md_text(text: str, width: int = 200) -> str:
    """Rater text for a Markdown table cell: one line, escaped (`visible`), cut to `width`
    with a visible "…", and Markdown's inline marks and HTML written as literal characters."""
    return re.sub(r"([\\`*_\[\]<>&|~])", r"\\\1", shorten(text, width))


def notes_section(run: Path, rounds: list[dict]) -> list[str]:
    """The notes in the run's store: how many per rater and the latest few, with the round
    whose queue held the item each is about."""
    store = ComparisonStore(run / "comparisons.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged line is `rlhf stats`'s to report
        n = notes_summary(store.answers())
    if not n["n"]:
        return ["No notes."]
    round_of = {}
    for r in rounds:
        for item in read_jsonl(run / round_name(r["round"]) / "queue.jsonl"):
            if isinstance(item, dict):
                round_of.setdefault(item.get("id"), r["round"])
    who = ", ".join(f"{md_text(r, 40)} {c}" for r, c in n["raters"].items())
    lines = [f"{n['n']} notes ({who}); the latest {len(n['latest'])}, newest first (cut at 200 "
             "characters here; `rlhf stats --json` and the store keep them whole).", "",
             "| round | rater | about | note |", "|---|---|---|---|"]
    for x in n["latest"]:
        about = "(alone)" if x["about_kind"] is None else x["about_kind"]
        lines.append(f"| {round_of.get(x['item_id'], '')} | {md_text(x['rater'], 40)} | "
                     f"{md_text(about, 20)} | {md_text(x['text'])} |")
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report/report.md` and its PNG plots; return the Markdown path."""
    run = Path(run_dir)
    rounds = read_jsonl(run / "rounds.jsonl")
    if not rounds:
        raise FileNotFoundError(f"{run}: no rounds.jsonl (is this a `rlhf loop` run folder?)")
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    steps = step_rows(run, rounds)
    plot_rounds(rounds, out / "rounds.png")
    plot_steps(steps, reward_rows(run, rounds), out / "steps.png")
    plot_frontier(rounds, steps, out / "frontier.png")
    plot_signals(steps, out / "signals.png")
    first, last = rounds[0].get("eval", {}), rounds[-1].get("eval", {})
    lines = [f"# RLHF loop report: `{run.name}`", "", who_rates(run, rounds), ""]
    if isinstance(first.get("gold"), (int, float)) and isinstance(last.get("gold"), (int, float)):
        lines += [f"Gold score {first['gold']:.3f} (round 0, the starting policy) -> "
                  f"{last['gold']:.3f} (round {rounds[-1]['round']}), KL to start "
                  f"{fmt(last.get('kl'))}. Reward hacking would show as the proxy reward "
                  "rising while the gold score stays flat or falls.", ""]
    lines += ["## Per round", "",
              "reward_gain and win_rate: this round's reward model scoring the round's policy "
              "against the starting policy on the same held-out prompts; kl: KL to the start "
              "(nats per response); gold: the simulated rater's own scorer; rm_accuracy: the "
              "reward model's accuracy on held-out prompts' comparisons; "
              "prev_rm_on_policy_accuracy: the previous round's reward model on this round's "
              "comparisons (pairs from the newer policy, which it never saw); length: words.",
              "", *round_table(run, rounds), "",
              "![per round](rounds.png)", "",
              "Shares: value [95% interval] n=count (Wilson; rm_accuracy: bootstrap over prompts).",
              "", *kinds_table(rounds), *report_length.length_sections(run, rounds),
              *live_stats.live_section(run, rounds),
              "## Over-optimisation signals (no gold needed)", "", *signals_section(rounds), "",
              "## Per training step (policy; reward model)", "", "![per step](steps.png)", "",
              "## KL-vs-reward frontier", "", "![frontier](frontier.png)", "",
              "## Samples, round by round (held-out prompts, same seed)", "",
              *samples_table(rounds), "",
              "## Raters' notes", "", *notes_section(run, rounds), ""]
    md = out / "report.md"
    tmp = md.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return md


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a `rlhf loop` run folder")
    a = p.parse_args(argv)
    print(write_report(a.run_dir))
    return 0
