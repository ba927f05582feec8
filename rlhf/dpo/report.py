"""Plots of a `rlhf train-dpo` run folder (`dpo.png`, beside its metrics.jsonl): per step the
loss and training accuracy; the implicit reward margin beta (h_c - h_r), training and held
out; the log-prob drift of each side from the reference (mean h_c and h_r: DPO can raise the
margin while *both* sides' log-probs fall, the known "likelihood displacement"); and the
held-out implicit-reward accuracy beside the length rule on the same pairs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [  # (title, [(metrics key, label)])
    ("loss / training accuracy", [("loss", "loss"), ("accuracy", "train accuracy")]),
    ("implicit reward margin", [("margin", "train"), ("val_mean_margin", "held out")]),
    ("log-ratio to reference (drift)", [("logratio_chosen", "chosen"),
                                        ("logratio_rejected", "rejected"),
                                        ("val_logratio_chosen", "held-out chosen"),
                                        ("val_logratio_rejected", "held-out rejected")]),
    ("held-out implicit-reward accuracy", [("val_accuracy", "DPO implicit reward"),
                                           ("val_length_rule_accuracy", "length rule")]),
]


def plot_run(run: str | Path, path: str | Path | None = None) -> Path:
    """Write the four panels of `run`/metrics.jsonl to `path` (default run/dpo.png)."""
    run = Path(run)
    rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()
            if s.strip()]
    rows = [r for r in rows if "loss" in r and isinstance(r.get("step"), int)
            and isinstance(r["loss"], float)]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.2))
    for ax, (title, series) in zip(axes, PANELS):
        for key, label in series:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path) if path else run / "dpo.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
