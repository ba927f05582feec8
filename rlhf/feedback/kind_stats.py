"""`rlhf stats` for every kind of record beside comparisons (`rlhf.feedback.stats` keeps the
comparison statistics):

- counts by kind and by rater: comparisons, rankings, ratings, corrections, notes (comments of
  comparisons count as notes), skips (answers that passed on an item; counted in their kind
  too) and records of a type this version does not know;
- median seconds per item, by kind (skips left out);
- ratings: Krippendorff's alpha (ordinal, interval and nominal) per scale, over the items
  rated by two or more raters (each rater's first answer; hidden repeats and skips left out);
- rankings: Kendall's tau-b between each pair of raters on the items both ranked, averaged
  over rater pairs and items;
- self-consistency on hidden repeats: for ratings the share given the same value and the
  mean absolute difference, for rankings the tau-b between first answer and repeat;
- corrections: the share of words changed (word-level edit distance / original words) and
  the seconds taken;
- notes: count per rater and the latest few.
Every name and text is shown through `text.visible`; a long note is cut for display with a
visible "…" (the stored text is untouched).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict

from rlhf.feedback.agreement import (
    METRICS,
    changed_share,
    kendall_tau_b,
    krippendorff_alpha,
)
from rlhf.feedback.records import (
    KINDS,
    Answer,
    Comparison,
    Correction,
    Note,
    Ranking,
    Rating,
    Unknown,
    notes,
)
from rlhf.feedback.text import visible

COUNTED = (*KINDS, "skip", "unknown")
"""The columns of the counts: each kind, the skips among the answers, unknown records."""
LATEST = 5
"""How many of the latest notes `rlhf stats` and the loop report show."""


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _rater(r: Answer | Unknown) -> str:
    if isinstance(r, Unknown):
        who = r.record.get("rater")
        return who if isinstance(who, str) else "?"
    return r.rater


def counts(records: list) -> dict:
    """{"overall": {column: n}, "raters": {rater: {column: n}}, "unknown_types": {type: n}}
    for the columns of COUNTED (notes: `records.notes`, comments of comparisons included)."""
    overall: Counter = Counter()
    raters: dict[str, Counter] = defaultdict(Counter)
    unknown: Counter = Counter()
    for r in records:
        if isinstance(r, Unknown):
            key = "unknown"
            unknown[r.kind] += 1
        elif isinstance(r, Note):
            continue  # counted from `notes` below
        else:
            key = r.kind
            if r.skip:
                overall["skip"] += 1
                raters[r.rater]["skip"] += 1
        overall[key] += 1
        raters[_rater(r)][key] += 1
    for n in notes(records):
        overall["note"] += 1
        raters[n.rater]["note"] += 1
    return {"overall": {k: overall[k] for k in COUNTED},
            "raters": {r: {k: c[k] for k in COUNTED} for r, c in sorted(raters.items())},
            "unknown_types": dict(unknown)}


def seconds_by_kind(records: list) -> dict[str, float | None]:
    """Median seconds from showing to answering, per kind of answer (skips, notes and
    answers without a time left out)."""
    times: dict[str, list[float]] = {k: [] for k in KINDS if k != "note"}
    for r in records:
        if (isinstance(r, Answer) and not isinstance(r, Note) and not r.skip
                and r.seconds is not None):
            times[r.kind].append(r.seconds)
    return {k: _median(v) for k, v in times.items()}


def first_answers(records: list, cls: type) -> dict[str, dict[str, Answer]]:
    """{item_id: {rater: answer}} of each rater's first non-skip answer of class `cls` to
    each item (hidden repeats left out)."""
    out: dict[str, dict[str, Answer]] = defaultdict(dict)
    for r in records:
        if isinstance(r, cls) and not r.skip and r.repeat_of is None:
            out[r.item_id].setdefault(r.rater, r)
    return out


def rating_agreement(records: list) -> list[dict]:
    """Per rating scale: Krippendorff's alpha of each metric over the items that two or more
    raters rated on that scale (first answers), with the number of items, raters and values."""
    by_scale: dict[tuple, list[list[int]]] = defaultdict(list)
    raters: dict[tuple, set[str]] = defaultdict(set)
    for item in first_answers(records, Rating).values():
        units: dict[tuple, list[Rating]] = defaultdict(list)
        for r in item.values():
            units[(r.scale, r.low, r.high)].append(r)
        for scale, rs in units.items():
            if len(rs) >= 2:
                by_scale[scale].append([r.value for r in rs])
                raters[scale] |= {r.rater for r in rs}
    return [{"scale": name, "low": low, "high": high, "items": len(units),
             "raters": len(raters[(name, low, high)]), "values": sum(map(len, units)),
             "alpha": {m: krippendorff_alpha(units, m) for m in METRICS}}
            for (name, low, high), units in sorted(by_scale.items())]


def _tau(a: Ranking, b: Ranking) -> float | None:
    """Tau-b of two rankings of the same responses (None when the responses differ)."""
    if a.responses != b.responses:
        return None
    return kendall_tau_b(a.ranks, b.ranks)


def ranking_agreement(records: list) -> dict:
    """Kendall's tau-b between each pair of raters on the items both ranked (first answers):
    {"pairs": [{"raters", "n", "tau"}], "n": (pair, item)s with a tau, "tau": their mean}.
    A pair of rankings where one ties everything has no tau and is left out."""
    by_pair: dict[tuple, list[float]] = defaultdict(list)
    for item in first_answers(records, Ranking).values():
        for r1, r2 in itertools.combinations(sorted(item), 2):
            tau = _tau(item[r1], item[r2])
            if tau is not None:
                by_pair[(r1, r2)].append(tau)
    every = [t for taus in by_pair.values() for t in taus]
    return {"pairs": [{"raters": list(p), "n": len(t), "tau": _mean(t)}
                      for p, t in sorted(by_pair.items())],
            "n": len(every), "tau": _mean(every)}


def repeat_pairs(records: list, cls: type) -> list[tuple[Answer, Answer]]:
    """(first answer, hidden repeat) pairs of class `cls`, neither a skip."""
    by_id = {r.id: r for r in records if isinstance(r, cls) and not r.skip}
    return [(by_id[r.repeat_of], r) for r in by_id.values() if r.repeat_of in by_id]


def rating_consistency(pairs: list[tuple[Rating, Rating]]) -> dict:
    """{"n", "same": share given the same value, "mean_abs_diff": in scale points}."""
    diffs = [abs(a.value - b.value) for a, b in pairs]
    return {"n": len(pairs), "same": _mean([float(d == 0) for d in diffs]),
            "mean_abs_diff": _mean(diffs)}


def ranking_consistency(pairs: list[tuple[Ranking, Ranking]]) -> dict:
    """{"n": repeats with a tau, "tau": mean tau-b between first answer and repeat}."""
    taus = [t for t in (_tau(a, b) for a, b in pairs) if t is not None]
    return {"n": len(taus), "tau": _mean(taus)}


def consistency(records: list) -> dict:
    """Self-consistency on hidden repeats, overall and per rater, for ratings and rankings."""
    rates, ranks = repeat_pairs(records, Rating), repeat_pairs(records, Ranking)
    who = sorted({b.rater for _, b in rates + ranks})
    return {"ratings": rating_consistency(rates), "rankings": ranking_consistency(ranks),
            "raters": {r: {"ratings": rating_consistency([p for p in rates if p[1].rater == r]),
                           "rankings": ranking_consistency([p for p in ranks
                                                            if p[1].rater == r])}
                       for r in who}}


def correction_stats(records: list) -> dict:
    """{"n", "changed_median", "changed_mean" (share of words changed, `changed_share`),
    "median_seconds"} of the corrections (skips left out)."""
    cs = [r for r in records if isinstance(r, Correction) and not r.skip]
    changed = [changed_share(c.response, c.corrected) for c in cs]
    return {"n": len(cs), "changed_median": _median(changed), "changed_mean": _mean(changed),
            "median_seconds": _median([c.seconds for c in cs if c.seconds is not None])}


def notes_summary(records: list, latest: int = LATEST) -> dict:
    """{"n", "raters": {rater: n}, "latest": the last `latest` notes written, newest first,
    each {"id", "rater", "item_id", "about", "about_kind", "text"} with the full text}.
    `about_kind` is the kind of the answer a note is about, None for a note standing alone,
    "?" when that answer is no longer in the records."""
    ns = notes(records)
    kinds = {r.id: r.kind for r in records}
    return {"n": len(ns), "raters": dict(sorted(Counter(n.rater for n in ns).items())),
            "latest": [{"id": n.id, "rater": n.rater, "item_id": n.item_id, "about": n.about,
                        "about_kind": None if n.about is None else kinds.get(n.about, "?"),
                        "text": n.text} for n in ns[::-1][:latest]]}


def kind_stats(records: list) -> dict:
    """Every statistic of the records of every kind, as a JSON-ready dict."""
    return {"only_comparisons": all(isinstance(r, Comparison) for r in records),
            "counts": counts(records), "median_seconds": seconds_by_kind(records),
            "ratings": rating_agreement(records), "rankings": ranking_agreement(records),
            "repeats": consistency(records), "corrections": correction_stats(records),
            "notes": notes_summary(records)}


# ----------------------------------------------------------------------------- display


def shorten(text: str, width: int) -> str:
    """`text` on one line (runs of white space as one space), escaped (`visible`), cut to
    `width` characters with a visible "…" when longer. For display only."""
    shown = visible(" ".join(text.split()))
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_counts(k: dict) -> list[str]:
    """Answers by kind and by rater, and the median seconds per item of each kind."""
    heads = ("comparison", "ranking", "rating", "correction", "note", "skip", "unknown")
    row = "".join(f"{h:>11}" for h in heads)
    lines = ["answers by kind (hidden repeats included; skip: passed on, also counted in "
             "its kind)", f"{'rater':<20}{row}"]
    for who, c in [*k["counts"]["raters"].items(), ("all", k["counts"]["overall"])]:
        lines.append(f"{shorten(who, 19):<20}" + "".join(f"{c[h]:>11}" for h in heads))
    if k["counts"]["unknown_types"]:
        lines.append("unknown record types (kept, not read): " + ", ".join(
            f"{shorten(t, 30)} {n}" for t, n in sorted(k["counts"]["unknown_types"].items())))
    secs = [f"{kind} {v:.1f}" for kind, v in k["median_seconds"].items() if v is not None]
    if secs:
        lines.append("median seconds per item: " + ", ".join(secs))
    return lines


def render_agreement(k: dict) -> list[str]:
    """Krippendorff's alpha per rating scale and Kendall's tau-b between rankers."""
    lines = []
    for s in k["ratings"]:
        a = s["alpha"]
        lines += [f"ratings on {shorten(s['scale'], 20)} ({s['low']}-{s['high']}): items rated "
                  f"by 2+ raters: {s['items']} ({s['raters']} raters, {s['values']} values)",
                  f"  Krippendorff's alpha: ordinal {_num(a['ordinal'])}, interval "
                  f"{_num(a['interval'])}, nominal {_num(a['nominal'])}"]
    if lines:
        lines += ["  (alpha: 1 = full agreement, 0 = chance; Krippendorff's guide: 0.800 and "
                  "above reliable,", "  0.667 to 0.800 for tentative conclusions only)"]
    r = k["rankings"]
    if r["n"]:
        lines.append(f"rankings: Kendall's tau-b between raters on shared items: mean "
                     f"{_num(r['tau'])} over {r['n']} (rater pair, item)s")
        lines += [f"  {shorten(p['raters'][0], 19)} vs {shorten(p['raters'][1], 19)}: "
                  f"n={p['n']} tau={_num(p['tau'])}" for p in r["pairs"]]
    return lines


def render_repeats(k: dict) -> list[str]:
    """Self-consistency of ratings and rankings on hidden repeats, per rater and overall."""
    def one(c: dict) -> str:
        parts = []
        if c["ratings"]["n"]:
            parts.append(f"ratings {c['ratings']['n']} (same {_pct(c['ratings']['same'])}, "
                         f"mean |diff| {_num(c['ratings']['mean_abs_diff'], 2)})")
        if c["rankings"]["n"]:
            parts.append(f"rankings {c['rankings']['n']} (tau {_num(c['rankings']['tau'])})")
        return "; ".join(parts)
    rep = k["repeats"]
    if not rep["raters"]:
        return []
    lines = ["self-consistency on hidden repeats (ratings: same value; rankings: tau-b, "
             "first vs repeat):"]
    lines += [f"  {shorten(r, 19)}: {one(c)}" for r, c in rep["raters"].items() if one(c)]
    if len(rep["raters"]) > 1:
        lines.append(f"  all: {one(rep)}")
    return lines


def render_corrections(k: dict) -> list[str]:
    c = k["corrections"]
    if not c["n"]:
        return []
    secs = "-" if c["median_seconds"] is None else f"{c['median_seconds']:.1f}"
    return [f"corrections: {c['n']} (median {secs} s each); words changed: median "
            f"{_pct(c['changed_median'])}, mean {_pct(c['changed_mean'])}",
            "  (word-level edit distance / the original's number of words)"]


def render_notes(k: dict, width: int = 70) -> list[str]:
    """Notes per rater and the latest few, each cut to `width` for display."""
    n = k["notes"]
    if not n["n"]:
        return []
    who = ", ".join(f"{shorten(r, 19)} {c}" for r, c in n["raters"].items())
    lines = [f"notes: {n['n']} ({who}); the latest {len(n['latest'])}, newest first:"]
    for x in n["latest"]:
        about = ("alone" if x["about_kind"] is None else "on (not found)"
                 if x["about_kind"] == "?" else f"on {x['about_kind']}")
        lines.append(f"  {shorten(x['rater'], 15):<16}{about:<16}{shorten(x['text'], width)}")
    return lines


def render_kinds(k: dict) -> list[str]:
    """The kinds part of `rlhf stats`: [] for records that are all comparisons without
    comments (whose output stays as it was); their comments are shown as notes."""
    lines = []
    for part in ([] if k["only_comparisons"] else render_counts(k), render_agreement(k),
                 render_repeats(k), render_corrections(k), render_notes(k)):
        if part:
            lines += ["", *part]
    return lines
