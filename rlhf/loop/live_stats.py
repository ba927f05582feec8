"""What a round of rating is made of, from the store's own records, for either loop mode: the
answers a round used, how stale they were, and how long each rater had nothing to answer; and
the report's section on it (`rlhf report`, a section of rlhf/loop/report.py).

Idle time is read from the records alone, so it is the same for people and for simulated
raters, in lock-step and async mode: each answer records when its item was shown (`shown_at`)
and how long the rater took (`seconds`); the gap between a rater's answer and the next item
shown to them (`shown_at` of their next answer) is time with nothing on their screen:
waiting for new items, for a round to train, or away. A rater's first answer has no gap
before it (when they arrived is not recorded), and neither has time after their last.
Staleness (Christiano et al. 2017 rate pairs from an older policy while the newer trains):
an answer to an item sampled from policy version v, used by round r (which trains from the
policy of round r-1), is r - 1 - v versions old; lock-step rounds are 0 by construction.
With `live.stale: downweight` such an answer, k = r - 1 - v - max_staleness > 0 versions
beyond the limit, counts with weight stale_weight**k in round r's reward-model training
(`stale_weight`, `weigh_snapshot`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

ANSWER_TYPES = ("comparison", "ranking", "rating", "correction")
"""Record types that answer a queue item (a note does not; a retraction is not an answer)."""


def answer_rows(data: bytes) -> list[dict]:
    """The item answers among whole JSON lines `data` (a slice of a store), in order; lines
    that do not parse are left to the store's own reader to report."""
    rows = []
    for raw in data.split(b"\n"):
        try:
            rec = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("type") in ANSWER_TYPES:
            rows.append(rec)
    return rows


def staleness(rows: list[dict], r: int) -> dict:
    """{"versions": {v: answers}, "mean": mean of r - 1 - v} of round r's answers `rows`
    (answers to items without a recorded policy version left out; mean None without any)."""
    versions: dict[int, int] = defaultdict(int)
    for row in rows:
        v = (row.get("meta") or {}).get("policy_version")
        if isinstance(v, int):
            versions[v] += 1
    n = sum(versions.values())
    mean = sum((r - 1 - v) * k for v, k in versions.items()) / n if n else None
    return {"versions": {str(v): k for v, k in sorted(versions.items())}, "mean": mean}


def stale_weight(version, r: int, max_staleness: int, factor: float) -> float:
    """The weight of an answer to an item sampled from policy `version` in round r's
    training: factor**k, k = how many versions its staleness r - 1 - version is beyond
    `max_staleness` (at least 0); 1 without a recorded version."""
    if isinstance(version, bool) or not isinstance(version, int):
        return 1.0
    return factor ** max(0, r - 1 - version - max_staleness)


def weigh_snapshot(data: bytes, r: int, max_staleness: int, factor: float
                   ) -> tuple[bytes, dict]:
    """Round r's snapshot of the store's whole lines `data`, each stale answer's weight
    (`stale_weight`) written into its record as `meta.weight` (times any weight it had; the
    reward model's pairs carry it: `rlhf.feedback.derive.record_weight`), every other line
    byte for byte; and what the round records: {"down_weighted": answers below 1,
    "mean_weight": over every answer (None without any), "by_version": {v: weight}}."""
    lines, weights, by_version = data.split(b"\n"), [], {}
    for i, raw in enumerate(lines):
        rows = answer_rows(raw)
        if not rows:
            continue
        rec = rows[0]
        v = (rec.get("meta") or {}).get("policy_version")
        w = stale_weight(v, r, max_staleness, factor)
        weights.append(w)
        if w < 1.0:
            by_version[str(v)] = w
            meta = dict(rec.get("meta") or {})
            meta["weight"] = w * meta.get("weight", 1.0)
            lines[i] = json.dumps({**rec, "meta": meta}, ensure_ascii=False).encode("utf-8")
    return b"\n".join(lines), {
        "down_weighted": sum(w < 1.0 for w in weights),
        "mean_weight": sum(weights) / len(weights) if weights else None,
        "by_version": dict(sorted(by_version.items(), key=lambda kv: int(kv[0])))}


def rater_time(rows: list[dict], counted: set[str]) -> dict[str, dict]:
    """{rater: {"answers", "busy_s", "idle_s"}} over the answers whose id is in `counted`:
    busy = their `seconds`, idle = the gap before each (see the module docstring). `rows`: every
    answer so far (for the gaps), in store order."""
    by_rater: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get("shown_at"), (int, float)):
            by_rater[row.get("rater", "")].append(row)
    out = {}
    for name, mine in sorted(by_rater.items()):
        mine.sort(key=lambda row: row["shown_at"])
        n = busy = idle = 0.0
        for i, row in enumerate(mine):
            if row.get("id") not in counted:
                continue
            n += 1
            busy += float(row.get("seconds") or 0.0)
            if i > 0:
                before = mine[i - 1]
                idle += max(0.0, row["shown_at"] - before["shown_at"]
                            - float(before.get("seconds") or 0.0))
        if n:
            out[name] = {"answers": int(n), "busy_s": round(busy, 3), "idle_s": round(idle, 3)}
    return out


def idle_share(times: dict[str, dict]) -> float | None:
    """Idle time over idle plus busy time, summed over raters (None without any time)."""
    busy = sum(t["busy_s"] for t in times.values())
    idle = sum(t["idle_s"] for t in times.values())
    return idle / (idle + busy) if idle + busy > 0 else None


def lockstep_round(rows: list[dict], r: int, total: int) -> dict | None:
    """A lock-step round's summary in the shape of an async cut (`rlhf.loop.live`) from the
    store's answers `rows`: its answers by people or raters on the page (meta.round r; a
    simulated rater answering at once has no time to measure), staleness 0 by construction;
    None without any. `total`: answers in the store up to this round."""
    ids = {row["id"] for row in rows if (row.get("meta") or {}).get("round") == r
           and row.get("rater_kind") != "simulated"}
    if not ids:
        return None
    return {"n_new": len(ids), "n_total": total, "reason": "queue rated",
            "staleness": {"versions": {str(r - 1): len(ids)}, "mean": 0.0},
            "raters": rater_time(rows, ids)}


def live_section(run: Path, rounds: list[dict]) -> list[str]:
    """The report's rows on rating, per round: answers used (new, in all), their policy
    versions and mean staleness, why the round started, and each rater's answers, busy and
    idle time: an async round's from its record (`live`), a lock-step round's from the store
    (`lockstep_round`). Nothing for a run whose raters are simulated in-process."""
    store = run / "comparisons.jsonl"
    rows = answer_rows(store.read_bytes()) if store.is_file() else []
    summaries, total = [], 0
    for r in rounds[1:]:
        total += sum(1 for row in rows if (row.get("meta") or {}).get("round") == r["round"])
        live = r.get("live") or lockstep_round(rows, r["round"], total)
        if live:
            summaries.append((r["round"], live))
    if not summaries:
        return []
    out = ["## Raters' time", "",
           "new: answers that came in for the round (async: since the previous round's cut; "
           "the round trains on every answer so far); versions: answers by the policy version "
           "that sampled their item; staleness: rounds between that policy and the one the "
           "round trains from (live.stale: downweight: how many of the answers so far the "
           "round's reward model counted less, and the mean weight of all of them); raters: "
           "answers, busy / idle seconds (idle: nothing on their screen, e.g. while a "
           "lock-step round trains).", "",
           "| round | new | in all | versions | staleness | started by | raters |",
           "|---|---|---|---|---|---|---|"]
    for r, live in summaries:
        mean = live.get("staleness", {}).get("mean")
        versions = ", ".join(f"v{v}: {k}" for v, k in live.get("staleness", {}).get(
            "versions", {}).items())
        raters = "; ".join(f"{name} {t['answers']} ({t['busy_s']:.0f}s / {t['idle_s']:.0f}s)"
                           for name, t in live.get("raters", {}).items())
        weights = live.get("weights") or {}
        stale = "" if mean is None else f"{mean:.2f}"
        if weights.get("down_weighted"):
            stale += (f" ({weights['down_weighted']} down-weighted, mean weight "
                      f"{weights['mean_weight']:.2f})")
        out.append(f"| {r} | {live.get('n_new', '')} | {live.get('n_total', '')} | "
                   f"{versions} | {stale} | "
                   f"{live.get('reason', '')} | {raters} |")
    return out + [""]
