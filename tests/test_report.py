"""`rlhf report` on a synthetic run folder (no model needed)."""

import json

from rlhf.cli import main
from rlhf.loop.report import write_report


def make_run(tmp_path, n_rounds=3):
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for r in range(n_rounds + 1):
        ev = {"gold": 0.1 * r, "kl": 0.5 * r, "reward_gain": 0.2 * r, "win_rate": 0.5 + 0.1 * r,
              "samples": [{"prompt": f"Once | {i}", "text": f"text {r} {i}", "gold": 0.1}
                          for i in range(3)]}
        rec = {"round": r, "policy": f"round_{r:02d}/policy", "eval": ev}
        if r:
            ev["rm_accuracy"] = 0.6 + 0.05 * r
            rd = run / f"round_{r:02d}" / "policy_train"
            rd.mkdir(parents=True)
            with open(rd / "metrics.jsonl", "w") as f:
                for s in range(5):
                    f.write(json.dumps({"step": s, "reward": s * 0.1, "kl": s * 0.05}) + "\n")
            rec["policy_metrics_file"] = f"round_{r:02d}/policy_train/metrics.jsonl"
            rec["n_comparisons_total"] = 10 * r
        rows.append(rec)
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_writes_markdown_and_plots(tmp_path):
    run = make_run(tmp_path)
    md = write_report(run)
    text = md.read_text()
    for name in ("rounds.png", "steps.png", "frontier.png"):
        assert (md.parent / name).stat().st_size > 1000
        assert f"]({name})" in text
    assert "round 3" in text and "text 3 0" in text
    assert "Once \\| 0" in text  # pipes in sample text are escaped
    assert "0.000 (round 0" in text and "0.300 (round 3)" in text


def test_report_cli_and_missing_run(tmp_path, capsys):
    run = make_run(tmp_path, n_rounds=1)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_report_shows_the_raters_notes(tmp_path):
    from rlhf.feedback.records import Comparison, Note, Rating
    from rlhf.feedback.store import ComparisonStore

    run = make_run(tmp_path, n_rounds=2)
    assert "## Raters' notes\n\nNo notes." in write_report(run).read_text()
    (run / "round_02" / "queue.jsonl").write_text(json.dumps({"id": "it7", "prompt": "p",
                                                              "a": "x", "ask": "rate"}) + "\n")
    evil = "a <script>x()</script> | **b** \x1b[2J" + " long" * 60 + " END"
    rating = Rating(item_id="it7", prompt="p", response="x", value=1, rater="ann")
    ComparisonStore(run / "comparisons.jsonl").extend([
        Comparison(item_id="it0", prompt="p", a="x", b="y", label="a", rater="bob",
                   comment="first"),
        rating, Note(text=evil, about=rating.id, item_id="it7", prompt="p", rater="ann"),
        Note(text="the prompts repeat", rater="ann")])
    text = write_report(run).read_text()
    section = text[text.index("## Raters' notes"):]
    assert "3 notes (ann 2, bob 1); the latest 3, newest first" in section
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert rows[0] == "|  | ann | (alone) | the prompts repeat |"
    assert rows[1].startswith("| 2 | ann | rating | a \\<script\\>x()\\</script\\> \\| "
                              "\\*\\*b\\*\\* \\\\x1b\\[2J long")
    assert rows[1].endswith("… |") and "END" not in rows[1] and "\x1b" not in section
    assert rows[2] == "|  | bob | comparison | first |"
