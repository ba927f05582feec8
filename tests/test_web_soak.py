"""A short soak of the rating server (`benchmarks/web_soak.py`): 10 web raters answering
every kind of item over HTTP for 4 seconds against one `rlhf serve` process; every
acknowledged answer is stored once, nothing else is stored, and no request failed. (The full
soak, 50 raters for 10 minutes, is the benchmark itself.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "web_soak.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("web_soak", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ten_raters_for_four_seconds_none_lost_none_doubled():
    figures = load_bench().soak(raters=10, seconds=4, think=0.1)
    assert figures["acknowledged"] >= 10 * 4  # each rater answered several items
    assert figures["stored"] == figures["acknowledged"]
    assert figures["lost"] == figures["doubled"] == figures["stored_unacknowledged"] == 0
    assert figures["store_errors"] == 0 and figures["other_statuses"] == {}, figures
    assert 0 < figures["p50_ms"] <= figures["p95_ms"]
    assert figures["rss_mb_start"] > 0 and figures["rss_mb_end"] > 0
