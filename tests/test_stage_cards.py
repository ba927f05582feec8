"""Every stage's output folder has a model card (README.md, rlhf/lm/cards.py) naming its base
model, its data and its method, with the held-out figures the run measured: SFT, DPO and
KTO (the last validation, the same numbers as the last `val_*` row of metrics.jsonl) and the
policy stage (its held-out evaluation, summary.json's `eval_end`). Tiny runs on stories260K.
"""

import json

import pytest
from conftest import STORIES, need_shared

from rlhf.cli import main
from rlhf.lm.cards import held_out, render_card, set_metrics

COMMON = ["progress=false", "runtime.threads=1"]


def card_of(folder):
    return (folder / "README.md").read_text()


def metric_rows(card: str) -> dict:
    """The held-out metrics table of a card -> {name: value text}."""
    table = card.split("## Held-out metrics\n\n")[1].split("\n## ")[0]
    return {line.split(" | ")[0][2:]: line.split(" | ")[1][1:-3]
            for line in table.splitlines()[2:] if line.startswith("| ")}


def last_val(out) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return next({k: v for k, v in r.items() if k.startswith("val_")} for r in reversed(rows)
                if any(k.startswith("val_") for k in r))


def assert_card(out, base, data, method, summary=None):
    card = card_of(out / "policy")
    assert f"**Base model:** `{base}`" in card
    assert f"`{data}`" in card.split("**Data:**")[1].split("\n")[0]
    assert f"**Method:** {method}" in card
    rows, want = metric_rows(card), last_val(out)
    assert want and set(rows) == {k for k, v in want.items() if v is not None}
    for k, v in rows.items():  # the run's own numbers, as the card prints them
        value = json.loads(v) if v.startswith("[") else float(v)  # (a 95% interval: a list)
        assert value == pytest.approx(want[k], rel=1e-9), k
        if summary is not None and f"last_{k}" in summary:
            assert value == pytest.approx(summary[f"last_{k}"], rel=1e-9), k
    return card


def story_rows(n=32):
    ends = [" She smiled and went home.", " The dog ran away and Tom cried."]
    return [{"prompt": f"Once upon a time, there was a child number {i}.",
             "good": ends[0], "bad": ends[1]} for i in range(n)]


def stage_data(tmp_path, stage):
    """The data file of a tiny run of `stage` (sft, dpo, kto: TRL's formats; policy: a prompt
    file), written into tmp_path."""
    rows = story_rows()
    path = tmp_path / f"{stage}.jsonl"
    if stage == "sft":
        lines = [{"prompt": r["prompt"], "completion": r["good"]} for r in rows]
    elif stage == "dpo":
        lines = [{"prompt": r["prompt"], "chosen": r["good"], "rejected": r["bad"]}
                 for r in rows]
    elif stage == "kto":
        lines = [{"prompt": r["prompt"], "completion": r[k], "label": k == "good"}
                 for r in rows for k in ("good", "bad")]
    else:
        path = tmp_path / "prompts.txt"
        path.write_text("".join(f"Once upon a time, a cat number {i} sat.\n" for i in range(12)))
        return path
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def stage_args(tmp_path, stage, out, *extra):
    """The command line of a tiny run of `stage` on stories260K (two steps, validated or
    evaluated on held-out rows/prompts)."""
    data = stage_data(tmp_path, stage)
    if stage == "policy":
        return ["train-policy", f"policy={STORIES}", f"out_dir={out}", f"prompts.path={data}",
                "prompts.batch_prompts=2", "prompts.hold_out_every=4", "prompts.eval_prompts=3",
                "prompts.eval_samples=1", "sampling.max_new_tokens=6", "algo.k=2", "steps=2",
                "reward.kind=scorer", "reward.scorer=length", "sample_every=0",
                "save_every=0", *COMMON, *extra]
    return [f"train-{stage}", f"out_dir={out}", f"model.init={STORIES}", f"data.paths=[{data}]",
            "data.max_len=48", "data.val_fraction=0.25", "train.batch_size=8",
            "train.max_steps=2", "train.eval_every=1", "train.warmup_steps=1", *COMMON, *extra]


def test_sft_dpo_and_kto_folders_have_cards_with_their_held_out_figures(tmp_path, capsys):
    need_shared()
    for stage, method in (("sft", "SFT (supervised fine-tuning)"),
                          ("dpo", "DPO (direct preference optimisation)"),
                          ("kto", "KTO (unpaired feedback)")):
        out = tmp_path / stage
        assert main(stage_args(tmp_path, stage, out)) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        card = assert_card(out, STORIES, tmp_path / f"{stage}.jsonl", method, summary)
        assert "| trained_steps | `2` |" in card and "## Usage" in card
        assert "val_accuracy" in metric_rows(card)


def test_policy_folder_card_names_prompts_method_and_held_out_evaluation(tmp_path, capsys):
    need_shared()
    prompts, out = tmp_path / "prompts.txt", tmp_path / "policy_run"
    assert main(stage_args(tmp_path, "policy", out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = card_of(out / "policy")
    assert f"**Base model:** `{STORIES}`" in card and f"**Data:** `{prompts}`" in card
    assert "**Method:** RL policy (rloo, k=2) on the reward of scorer length" in card
    assert "| algorithm | `rloo` |" in card and "| steps | `2` |" in card
    rows = metric_rows(card)
    want = {f"eval_{k}": v for k, v in summary["eval_end"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert want and {k: float(v) for k, v in rows.items() if k in want} == pytest.approx(want)
    assert "eval_reward" in rows


def test_set_metrics_keep_adds_to_the_rows_and_held_out_reads_the_last_validation(tmp_path):
    (tmp_path / "README.md").write_text(render_card({"method": "SFT", "metrics": {
        "val_loss": 1.5, "val_accuracy": 0.25}}))
    set_metrics(tmp_path, {"loop_gold": 0.75, "loop_kl": 0.125, "texts": ["a"],
                           "loop_gold_ci95": [0.5, 1.0], "samples": [{"a": 1}]}, keep=True)
    rows = metric_rows(card_of(tmp_path))
    assert rows == {"val_loss": "1.5", "val_accuracy": "0.25", "loop_gold": "0.75",
                    "loop_kl": "0.125", "loop_gold_ci95": "[0.5, 1.0]"}  # (texts: no figure)
    set_metrics(tmp_path, {"val_loss": 1.25}, write=False)  # a rank that does not write
    assert metric_rows(card_of(tmp_path))["val_loss"] == "1.5"
    assert set_metrics(tmp_path / "nowhere", {"a": 1}) is None  # no card: nothing to do
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0, "val_loss": 1.9}\n{"step": 2, "loss": 1.0}\n'
                   '{"step": 3, "loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.5}\n'
                   '{"event": "end", "val_loss": 0.6\n')  # (a line cut by a crash: skipped)
    assert held_out(log) == {"val_loss": 0.7, "val_accuracy": 0.5}
    assert held_out(tmp_path / "none.jsonl") == {}


def test_loop_final_policy_card_holds_the_loops_evaluation(tmp_path, capsys):
    """The loop's last round's policy (its final policy) has the policy stage's card, with the
    loop's held-out evaluation of that round (gold, KL, reward gain, ...) beside the stage's
    own (none here: the loop's policy stage holds no prompts out)."""
    from test_loop import TINY, records

    need_shared()
    out = tmp_path / "loop"
    assert main(["loop", *TINY, "rounds=1", f"out_dir={out}"]) == 0
    ev = records(out)[-1]["eval"]
    card = card_of(out / "round_01" / "policy_train" / "policy")
    assert f"**Base model:** `{STORIES}`" in card and "**Method:** RL policy (rloo" in card
    rows = metric_rows(card)
    assert float(rows["loop_gold"]) == pytest.approx(ev["gold"], rel=1e-9)
    assert float(rows["loop_kl"]) == pytest.approx(ev["kl"], rel=1e-9)
    assert float(rows["loop_win_rate"]) == pytest.approx(ev["win_rate"], rel=1e-9)
    assert card.count("## Held-out metrics") == 1 and "# RL policy\n" in card
    rm_card = card_of(out / "round_01" / "reward_model" / "model")
    assert "last_val_accuracy" in metric_rows(rm_card)
