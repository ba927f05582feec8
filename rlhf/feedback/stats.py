"""`rlhf stats STORE`: how much was rated, by whom, and how trustworthy it looks.

- counts per label and per rater;
- position bias: the share of preferences (a or b) that went to the side shown on the left
  (0.5 = no bias; imported data, whose sides were never shown, is left out);
- self-consistency: on hidden repeats (served again later with sides swapped), the share
  where the rater gave the same label as the first time;
- gold accuracy: the share of gold items answered with the known label;
- agreement between raters on items both answered (skips left out): raw share and Cohen's
  kappa. Published anchor: trained labelers agree about 73% of the time (InstructGPT
  72.6 +- 1.5%, Ouyang et al. 2022; Stiennon et al. 2020: 73 +- 4%);
- median seconds per item;
- labels as a table, the strength breakdown of preferences, the overall left share, a warning
  where a share rests on few answers, and the items raters disagreed on.
For a store with rankings, ratings, corrections or notes, also (`rlhf.feedback.kind_stats`):
counts by kind and rater, median seconds per item by kind, Krippendorff's alpha of ratings,
Kendall's tau-b of rankings between raters, self-consistency of ratings and rankings on hidden
repeats, the share of words corrections changed, and the notes (the latest few shown).
Every name and text from the store is shown through `text.visible` (escapes shown, inert).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import warnings
from collections import Counter, defaultdict

from rlhf.feedback.formats import detect_format, read_records
from rlhf.feedback.kind_stats import kind_stats, render_kinds
from rlhf.feedback.records import Comparison, RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible

SMALL = 30
"""Below this many answers a share is flagged as noisy (its 95% interval is wider than
about +-18 points)."""


def cohen_kappa(x: list[str], y: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None if undefined.
    kappa = (p_o - p_e) / (1 - p_e), p_e = sum over labels of p_x(label) * p_y(label)."""
    if len(x) != len(y):
        raise ValueError("both raters need one label per shared item")
    n = len(x)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / (n * n)
    if p_e == 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def position_bias(comps: list[Comparison]) -> tuple[float | None, int]:
    """(share of a/b preferences that chose the left side, number of such preferences)."""
    sides = [c.chose_left for c in comps
             if c.served_because != "import" and c.chose_left is not None]
    return share(sum(sides), len(sides)), len(sides)


def self_consistency(comps: list[Comparison]) -> tuple[float | None, int]:
    """(share of hidden repeats answered like the original, number of repeat pairs)."""
    by_id = {c.id: c for c in comps}
    pairs = [(by_id[c.repeat_of], c) for c in comps
             if c.repeat_of in by_id and c.label != "skip"]
    return share(sum(a.label == b.label for a, b in pairs), len(pairs)), len(pairs)


def gold_accuracy(comps: list[Comparison]) -> tuple[float | None, int]:
    """(share of gold items answered with the gold label, number answered)."""
    gold = [c for c in comps if c.gold is not None and c.label != "skip"]
    return share(sum(c.label == c.gold for c in gold), len(gold)), len(gold)


def first_answers(comps: list[Comparison]) -> dict[str, dict[str, str]]:
    """{rater: {item_id: label}} of each rater's first non-skip answer to each item."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for c in comps:
        if c.label != "skip" and c.repeat_of is None:
            out[c.rater].setdefault(c.item_id, c.label)
    return out


def agreement(comps: list[Comparison]) -> list[dict]:
    """For each pair of raters with shared items: n, raw agreement and Cohen's kappa."""
    answers = first_answers(comps)
    rows = []
    for r1, r2 in itertools.combinations(sorted(answers), 2):
        shared = sorted(set(answers[r1]) & set(answers[r2]))
        if not shared:
            continue
        x = [answers[r1][i] for i in shared]
        y = [answers[r2][i] for i in shared]
        rows.append({"raters": [r1, r2], "n": len(shared),
                     "agreement": share(sum(a == b for a, b in zip(x, y)), len(shared)),
                     "kappa": cohen_kappa(x, y)})
    return rows


def disagreements(comps: list[Comparison]) -> list[dict]:
    """Items that two or more raters answered (first non-skip answers) with different labels."""
    answers = first_answers(comps)
    prompts = {c.item_id: c.prompt for c in comps}
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for rater, labels in answers.items():
        for item, label in labels.items():
            by_item[item][rater] = label
    return [{"item_id": i, "prompt": prompts[i][:200], "labels": dict(sorted(rs.items()))}
            for i, rs in sorted(by_item.items()) if len(set(rs.values())) > 1]


def strengths(comps: list[Comparison]) -> dict[str, int]:
    """How strong the a/b preferences were said to be ('unsaid' when not given)."""
    c = Counter(x.strength or "unsaid" for x in comps if x.label in ("a", "b"))
    return {k: c[k] for k in ("slightly", "clearly", "much", "unsaid") if c[k]}


def rater_stats(comps: list[Comparison]) -> dict:
    bias, n_bias = position_bias(comps)
    cons, n_rep = self_consistency(comps)
    acc, n_gold = gold_accuracy(comps)
    times = [c.seconds for c in comps if c.seconds is not None and c.label != "skip"]
    return {"n": len(comps), "kind": Counter(c.rater_kind for c in comps).most_common(1)[0][0],
            "labels": dict(Counter(c.label for c in comps)),
            "left_share": bias, "n_sided": n_bias,
            "self_consistency": cons, "n_repeats": n_rep,
            "gold_accuracy": acc, "n_gold": n_gold,
            "median_seconds": statistics.median(times) if times else None}


def compute(records: list) -> dict:
    """Every statistic of a list of records, as a JSON-ready dict: the comparisons' at the top
    level, every kind's under "kinds" (`kind_stats.kind_stats`)."""
    comps = [r for r in records if isinstance(r, Comparison)]
    by_rater: dict[str, list[Comparison]] = defaultdict(list)
    for c in comps:
        by_rater[c.rater].append(c)
    overall = rater_stats(comps) if comps else {"n": 0}
    return {"n": len(comps), "items": len({c.item_id for c in comps}),
            "labels": dict(Counter(c.label for c in comps)), "overall": overall,
            "raters": {r: rater_stats(cs) for r, cs in sorted(by_rater.items())},
            "strengths": strengths(comps), "agreement": agreement(comps),
            "disagreements": disagreements(comps), "kinds": kind_stats(records)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _label_table(s: dict) -> list[str]:
    n = max(1, s["n"])
    lines = [f"{'label':<12}{'n':>7}{'share':>9}"]
    for label, k in sorted(s["labels"].items(), key=lambda x: -x[1]):
        lines.append(f"{visible(label)[:11]:<12}{k:>7}{_pct(k / n):>9}")
    if s.get("strengths"):
        total = sum(s["strengths"].values())
        lines += ["", "strength of the a/b preferences:"] + [
            f"  {k:<10}{v:>7}{_pct(v / total):>9}" for k, v in s["strengths"].items()]
    return lines


def _warnings(s: dict) -> list[str]:
    o = s["overall"]
    out = []
    for key, n_key, what in (("left_share", "n_sided", "left share"),
                             ("self_consistency", "n_repeats", "self-consistency"),
                             ("gold_accuracy", "n_gold", "gold accuracy")):
        if o.get(key) is not None and o[n_key] < SMALL:
            out.append(f"warning: the {what} rests on {o[n_key]} answers (under {SMALL}): "
                       "read it as a rough guide")
    return out


def render(s: dict) -> str:
    """A human-readable table of `compute`'s result (the comparisons' part left out when
    there are none but there are other kinds)."""
    kinds = render_kinds(s["kinds"])
    if s["n"] == 0 and kinds:
        return "\n".join(kinds[1:])
    return "\n".join([render_comparisons(s), *kinds])


def render_comparisons(s: dict) -> str:
    o = s["overall"]
    lines = [f"{s['n']} comparisons of {s['items']} items", "", *_label_table(s), "",
             f"overall left share: {_pct(o.get('left_share'))} of {o.get('n_sided', 0)} "
             "preferences shown with sides (50% = no position bias)", *_warnings(s), "",
             f"{'rater':<20}{'kind':<10}{'n':>6}{'left':>8}{'consist.':>10}{'gold':>8}"
             f"{'med s':>8}  labels"]
    for r, st in s["raters"].items():
        med = "-" if st["median_seconds"] is None else f"{st['median_seconds']:.1f}"
        lines.append(f"{visible(r)[:19]:<20}{st['kind']:<10}{st['n']:>6}"
                     f"{_pct(st['left_share']):>8}{_pct(st['self_consistency']):>10}"
                     f"{_pct(st['gold_accuracy']):>8}{med:>8}  {st['labels']}")
    lines += ["", "left = share of preferences given to the left side (50% = no bias); "
              "consist. = same answer on hidden repeats; gold = accuracy on gold items"]
    if s["agreement"]:
        lines += ["", "agreement on shared items (trained labelers: about 73%):"]
        for a in s["agreement"]:
            k = "-" if a["kappa"] is None else f"{a['kappa']:.3f}"
            lines.append(f"  {visible(a['raters'][0])} vs {visible(a['raters'][1])}: "
                         f"n={a['n']} agree={_pct(a['agreement'])} kappa={k}")
    if s.get("disagreements"):
        lines += ["", f"items raters disagreed on ({len(s['disagreements'])}):"]
        for d in s["disagreements"][:50]:
            who = ", ".join(f"{visible(r)}: {v}" for r, v in d["labels"].items())
            prompt = visible(d["prompt"].replace("\n", " "))[:50]
            lines.append(f"  {visible(d['item_id'])[:20]:<20} {who}   ({prompt})")
        if len(s["disagreements"]) > 50:
            lines.append(f"  ... and {len(s['disagreements']) - 50} more (--json lists all)")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="feedback store (JSONL) or any preference file")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON line")
    a = p.parse_args(argv)

    try:
        if detect_format(a.store) == "store":
            store = ComparisonStore(a.store)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                records = store.answers()
            for e in store.errors:
                print(f"rlhf stats: skipped malformed line: {e}", file=sys.stderr)
        else:
            records = read_records(a.store)
    except RecordError as e:
        print(f"rlhf stats: error: {e}", file=sys.stderr)
        return 2
    s = compute(records)
    print(json.dumps(s) if a.json else render(s))
    return 0
