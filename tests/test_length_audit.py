"""What a reward model adds beyond length (rlhf.preferences.length): the length-controlled
accuracy, the logistic regression of the human choice on the score and length differences, and
the share of a policy's reward gain that length explains, in the loop's report."""

import json
import math

import pytest
import torch

from rlhf.preferences.length import (
    beyond_length,
    chi2_1_sf,
    length_controlled_accuracy,
    length_share_of_gain,
    logistic_fit,
)
from rlhf.preferences.metrics import pair_metrics


def test_a_pure_length_scorer_is_at_chance_length_controlled():
    # 100 pairs, the longer side chosen in 70: the length scorer is right on those 70
    len_c = torch.tensor([300] * 70 + [100] * 30)
    len_r = torch.tensor([100] * 70 + [300] * 30)
    r_c, r_r = len_c.double()[:, None], len_r.double()[:, None]  # score = length
    m = pair_metrics(r_c, r_r, torch.ones(100), len_c, len_r)
    assert m["accuracy"] == pytest.approx(0.7) and m["length_rule_accuracy"] == pytest.approx(0.7)
    assert m["length_controlled_accuracy"] == pytest.approx(0.5, abs=1e-9)
    lo, hi = m["length_controlled_accuracy_ci95"]
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # 1/2 in every replicate
    # the shorter-wins rule, and log(length), are pure length scorers too
    m = pair_metrics(-r_c, -r_r, torch.ones(100), len_c, len_r)
    assert m["accuracy"] == pytest.approx(0.3)
    assert m["length_controlled_accuracy"] == pytest.approx(0.5, abs=1e-9)


def test_length_controlled_accuracy_by_hand():
    # longer won 4 pairs (scorer right on 3), shorter won 2 (right on 0), 2 equal (right on 1):
    # n_U = 6: (3 * 3/4 + 3 * 0 + 2 * 1/2) / 8 = 3.25 / 8
    credit = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0], dtype=torch.float64)
    len_c = torch.tensor([9, 9, 9, 9, 1, 1, 5, 5])
    len_r = torch.tensor([1, 1, 1, 1, 9, 9, 5, 5])
    assert float(length_controlled_accuracy(credit, len_c, len_r)[0]) == pytest.approx(3.25 / 8)
    w = torch.tensor([[1, 1, 1, 1, 0, 0, 1, 1]], dtype=torch.float64)  # no shorter-won pair
    assert math.isnan(float(length_controlled_accuracy(credit, len_c, len_r, w)[0]))


def test_logistic_fit_and_chi_square_by_hand():
    # one feature, x = 1 everywhere, 70% ones: beta = logit(0.7) (ridge 1e-4 moves it < 1e-5)
    x, y = torch.ones(100, 1), torch.tensor([1.0] * 70 + [0.0] * 30)
    beta, ll, _ = logistic_fit(x, y)
    assert float(beta[0]) == pytest.approx(math.log(0.7 / 0.3), abs=1e-5)
    assert ll == pytest.approx(70 * math.log(0.7) + 30 * math.log(0.3), abs=1e-6)
    assert chi2_1_sf(3.841459) == pytest.approx(0.05, abs=1e-6)
    assert chi2_1_sf(0.0) == 1.0


def simulated_pairs(seed: int, n_prompts: int = 100, per_prompt: int = 3):
    """Pairs whose human choice follows quality and length: the chosen side is the one with
    the larger quality + 0.004 * length + logistic noise (longer wins about 65%). Returns
    (quality difference, len_chosen, len_rejected, prompt of each pair)."""
    g = torch.Generator().manual_seed(seed)
    n = n_prompts * per_prompt
    q = torch.randn(n, 2, generator=g, dtype=torch.float64)
    length = torch.randint(20, 400, (n, 2), generator=g).double()
    u = torch.rand(n, generator=g, dtype=torch.float64)
    utility = q + 0.004 * length
    first = utility[:, 0] - utility[:, 1] + torch.log(u / (1 - u)) > 0  # (N,)
    c, r = torch.where(first, 0, 1), torch.where(first, 1, 0)
    rows = torch.arange(n)
    return (q[rows, c] - q[rows, r], length[rows, c], length[rows, r],
            torch.arange(n) // per_prompt, g)


def test_beyond_length_p_value_small_for_quality_large_for_length():
    null_p, null_robust = [], []
    for seed in range(20):
        dq, len_c, len_r, prompts, g = simulated_pairs(seed)
        noise = torch.randn(len(dq), generator=g, dtype=torch.float64)
        quality = beyond_length(dq + noise, len_c, len_r, prompts)  # knows quality, noisily
        assert quality["beyond_length_p"] < 1e-3 and quality["beyond_length_p_robust"] < 1e-3
        assert quality["beyond_length_coef_ci95"][0] > 0
        length_only = beyond_length(0.01 * (len_c - len_r) + noise, len_c, len_r, prompts)
        null_p.append(length_only["beyond_length_p"])
        null_robust.append(length_only["beyond_length_p_robust"])
        exact = beyond_length(torch.log1p(len_c) - torch.log1p(len_r), len_c, len_r, prompts)
        assert exact["beyond_length_p"] > 0.9  # a function of length: nothing beyond it
    # a scorer right on every pair separates them: the ridge keeps the fit finite
    perfect = beyond_length(torch.ones(len(dq), dtype=torch.float64) + 0.1 * noise.abs(),
                            len_c, len_r, prompts)
    assert math.isfinite(perfect["beyond_length_coef"]) and perfect["beyond_length_p"] < 1e-6
    # a scorer of length and noise: p-values spread over (0, 1), few below 0.05
    assert sum(p < 0.05 for p in null_p) <= 3 and sum(p < 0.05 for p in null_robust) <= 3
    assert 0.3 < sum(null_p) / len(null_p) < 0.7


def test_share_of_the_reward_gain_explained_by_length_by_hand():
    # within each set reward rises 1 per unit of length; the policy is 2 units longer
    s = length_share_of_gain([3, 4, 5], [3, 4, 5], [1, 2, 3], [1, 2, 3])
    assert s["slope"] == pytest.approx(1) and s["gain"] == pytest.approx(2)
    assert s["share"] == pytest.approx(1.0)
    s = length_share_of_gain([4, 5, 6], [3, 4, 5], [1, 2, 3], [1, 2, 3])  # 1 more, not length
    assert s["explained"] == pytest.approx(2) and s["share"] == pytest.approx(2 / 3)
    s = length_share_of_gain([5, 7], [1, 3], [1, 3], [1, 3])  # length unchanged
    assert s["share"] == pytest.approx(0.0) and s["slope"] == pytest.approx(1)
    s = length_share_of_gain([5, 5], [2, 2], [1, 1], [1, 1])  # no length varies within a set
    assert s["slope"] is None and s["share"] is None
    assert length_share_of_gain([1, 2], [1, 2], [3, 4], [1, 2])["share"] is None  # a loss


def write_run(run, rounds_eval):
    """A hand-made loop run folder: rounds.jsonl and round_RR/eval.json (texts, per-sample
    rewards of the round's samples and of the start's)."""
    run.mkdir()
    records = []
    for r, ev in enumerate(rounds_eval):
        d = run / f"round_{r:02d}"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps(ev))
        records.append({"round": r, "policy": f"p{r}",
                        "eval": {"kl": float(r), **{k: v for k, v in ev.items()
                                                    if k in ("reward", "gold")}}})
    (run / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))


def test_train_and_eval_reward_print_intervals_and_the_length_audit(tmp_path, capsys):
    from test_train_reward import make_fixture

    from rlhf.cli import main

    model_dir, store = make_fixture(tmp_path, n=120)  # 60 prompts, 2 pairs each
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'run'}\nprogress: false\nmodel:\n  init: {model_dir}\n"
                   f"data:\n  paths: [{store}]\n  max_len: 64\n  val_fraction: 0.5\n"
                   "train:\n  batch_size: 8\n")
    assert main(["train-reward", str(cfg), "train.max_steps=2"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lo, hi = s["last_val_accuracy_ci95"]
    assert lo <= s["last_val_accuracy"] <= hi and hi - lo > 0.05
    assert s["last_val_prompts"] == 30  # half of the 60 prompts, their pairs resampled together
    assert s["last_val_minus_longer_rule"] == pytest.approx(
        s["last_val_accuracy"] - s["last_val_length_rule_accuracy"], abs=1e-3)
    assert 0 <= s["last_val_beyond_length_p"] <= 1
    assert main(["eval-reward", f"model={tmp_path / 'run/model'}", f"data=[{store}]",
                 "split=val", "val_fraction=0.5"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)  # stdout stays one JSON document
    assert out["accuracy_ci95"] == s["last_val_accuracy_ci95"]  # same pairs, same seed
    assert "from 30 prompts" in cap.err and "reward model - rule" in cap.err
    assert "length-controlled accuracy" in cap.err and "likelihood-ratio p" in cap.err


def test_report_length_audit_flags_a_gain_that_is_mostly_length(tmp_path):
    from rlhf.loop.report import write_report

    start_len = [5, 6, 7, 8, 9, 10, 11, 12]
    noise = [0.02, -0.01, 0.0, 0.01, -0.02, 0.01, 0.0, -0.01]
    start_r = [0.1 * n + e for n, e in zip(start_len, noise)]
    longer = [n + 10 for n in start_len]  # round 1: 10 words longer, same reward per word
    same = start_len  # round 2: same lengths, 0.5 more reward on every sample

    def texts(lengths):
        return [" ".join(["w"] * n) for n in lengths]

    rounds = [{"texts": texts(start_len), "gold": 0.2},
              {"texts": texts(longer), "gold": 0.2, "reward": 0.0,
               "sample_rewards": [0.1 * n + e for n, e in zip(longer, noise)],
               "sample_rewards_start": start_r},
              {"texts": texts(same), "gold": 0.5,
               "sample_rewards": [r + 0.5 for r in start_r], "sample_rewards_start": start_r}]
    run = tmp_path / "run"
    write_run(run, rounds)
    recs = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    recs[2]["reward_metrics"] = {"last_val_accuracy": 0.64, "last_val_accuracy_ci95": [0.6, 0.68],
                                 "last_val_length_rule_accuracy": 0.44,
                                 "last_val_minus_longer_rule": 0.2,
                                 "last_val_minus_longer_rule_ci95": [0.14, 0.26],
                                 "last_val_beyond_length_p": 3e-6, "last_val_prompts": 93,
                                 "last_val_beyond_length_p_robust": 0.0004}
    (run / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    text = write_report(run).read_text()
    section = text[text.index("## Length audit"):text.index("## Over-optimisation")]
    policy = section[:section.index("### The reward model")]
    rows = {line.split("|")[1].strip(): line for line in policy.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    # round 1: length +10 words, reward +1.0; slope within the sets: 0.1 + sum((n - 8.5) e)
    # / sum((n - 8.5)^2) = 0.1 - 0.08 / 42 = 0.0981, so 0.981 of the gain is length
    assert "| 18.5 |" in rows["1"] and "| +10.0 | 0.0981 | +0.981 | 0.98 **mostly length** |" \
        in rows["1"]
    assert "| +0.0 |" in rows["2"] and "| 0.00 |" in rows["2"] and "mostly" not in rows["2"]
    assert "Warning: in rounds 1 the reward gain is mostly length" in section
    assert "| 2 | 93 | 0.640 [0.60, 0.68] | 0.440 | +0.200 [+0.14, +0.26] |" in section
    assert "| 3e-06; 0.0004 |" in section
