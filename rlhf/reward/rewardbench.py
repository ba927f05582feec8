"""RewardBench-format evaluation (`rlhf eval-reward` on such files).

Two row shapes, in JSON (a list), JSON lines, or gzipped JSON lines:
- RewardBench (Lambert et al. 2024): {"prompt", "chosen", "rejected", "subset"} with one
  text each; correct when the chosen response scores above the rejected one.
- RewardBench 2 (Malik et al. 2025) best-of-n: "chosen" and "rejected" are lists; correct
  when *every* chosen response scores above *every* rejected one (min chosen > max rejected;
  25% by chance at 1 vs 3). Departure: RewardBench 2's "Ties" subset has its own official
  score (margins between correct answers); here it gets the same all-above rule.
A score tie counts as wrong (a benchmark asks for a strict ordering).

Reported per subset and overall: accuracy; the length rules on the same rows ("longer wins":
the row is right when the longest response is a chosen one and longer than every rejected;
"shorter wins" likewise with the shortest); and the accuracy bucketed by the character-length
difference between the (first) chosen and the longest rejected response.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.config import UserError

LENGTH_BUCKETS = (0, 20, 100, 400)


@dataclass
class BenchRow:
    prompt: str
    chosen: list[str]
    rejected: list[str]
    subset: str


def _rows(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return out


def is_rewardbench(path: str | Path) -> bool:
    """True when the first row has prompt, chosen and rejected, and either a subset or lists."""
    if not Path(path).is_file():
        return False
    try:
        rows = _rows(Path(path))
    except (UserError, UnicodeDecodeError, OSError):
        return False  # not ours to judge: the comparison readers report their own errors
    if not rows or not isinstance(rows[0][1], dict):
        return False
    r = rows[0][1]
    return {"prompt", "chosen", "rejected"} <= set(r) and (
        "subset" in r or isinstance(r["chosen"], list))


def read_rewardbench(path: str | Path) -> list[BenchRow]:
    """Rows of a RewardBench / RewardBench 2 file; a bad row -> UserError naming file:line."""
    path = Path(path)
    out = []
    for line, r in _rows(path):
        where = f"{path}:{line}"
        if not isinstance(r, dict):
            raise UserError(f"{where}: a row must be an object")
        for key in ("prompt", "chosen", "rejected"):
            if key not in r:
                raise UserError(f"{where}: no {key!r}")
        sides = []
        for key in ("chosen", "rejected"):
            v = r[key] if isinstance(r[key], list) else [r[key]]
            if not v or not all(isinstance(x, str) for x in v):
                raise UserError(f"{where}: {key!r} must be a text or a non-empty list of texts")
            sides.append(v)
        if not isinstance(r["prompt"], str):
            raise UserError(f"{where}: 'prompt' must be a text")
        out.append(BenchRow(r["prompt"], sides[0], sides[1], str(r.get("subset", "all"))))
    if not out:
        raise UserError(f"{path}: no rows")
    return out


def row_correct(chosen: torch.Tensor, rejected: torch.Tensor) -> bool:
    """Scores of one row's chosen (C,) and rejected (R,) responses: min chosen > max rejected."""
    return bool(chosen.min() > rejected.max())


def _rule(row: BenchRow, longer: bool) -> bool:
    sign = 1 if longer else -1
    best_c = max(sign * len(x) for x in row.chosen)
    best_r = max(sign * len(x) for x in row.rejected)
    return best_c > best_r


def bench_metrics(rows: list[BenchRow], scores: list[tuple[torch.Tensor, torch.Tensor]]
                  ) -> dict:
    """Accuracy, both length rules and length-difference buckets, per subset and overall.
    scores[i] = (chosen scores (C,), rejected scores (R,)) of rows[i]."""
    right = [row_correct(c, r) for c, r in scores]
    longer = [_rule(x, True) for x in rows]
    shorter = [_rule(x, False) for x in rows]

    def summary(sel: list[int]) -> dict:
        n = len(sel)
        return {"rows": n, "accuracy": sum(right[i] for i in sel) / n,
                "longer_wins_accuracy": sum(longer[i] for i in sel) / n,
                "shorter_wins_accuracy": sum(shorter[i] for i in sel) / n}

    subsets = sorted({x.subset for x in rows})
    out = {"overall": summary(list(range(len(rows)))),
           "subsets": {s: summary([i for i, x in enumerate(rows) if x.subset == s])
                       for s in subsets}}
    gap = [abs(len(x.chosen[0]) - max(len(y) for y in x.rejected)) for x in rows]
    buckets = {}
    for k, lo in enumerate(LENGTH_BUCKETS):
        hi = LENGTH_BUCKETS[k + 1] if k + 1 < len(LENGTH_BUCKETS) else None
        sel = [i for i, g in enumerate(gap) if g >= lo and (hi is None or g < hi)]
        buckets[f"{lo}-{hi}" if hi is not None else f"{lo}+"] = summary(sel) if sel else {
            "rows": 0}
    out["by_length_difference"] = buckets
    return out


def format_table(m: dict) -> str:
    """The per-subset table printed by `rlhf eval-reward` (plain text)."""
    lines = [f"{'subset':<28} {'rows':>6} {'accuracy':>9} {'longer':>7} {'shorter':>8}"]
    items = list(m["subsets"].items()) + [("overall", m["overall"])]
    for name, s in items:
        name = "".join(ch if ch.isprintable() else "?" for ch in name)  # untrusted text
        lines.append(f"{name[:28]:<28} {s['rows']:>6} {s['accuracy']:>9.3f} "
                     f"{s['longer_wins_accuracy']:>7.3f} {s['shorter_wins_accuracy']:>8.3f}")
    lines.append("by |len(chosen) - len(longest rejected)| (characters):")
    for name, s in m["by_length_difference"].items():
        if s["rows"]:
            lines.append(f"  {name:<10} {s['rows']:>6} {s['accuracy']:>9.3f} "
                         f"{s['longer_wins_accuracy']:>7.3f} {s['shorter_wins_accuracy']:>8.3f}")
    return "\n".join(lines)
