"""`rlhf train-dpo`: the DPO / IPO losses by hand, packed-pair log-probs and the reference cache
against a fresh pass, a known rule learned to > 90% held out, exact resume after a kill, the
implicit reward in `rlhf eval-reward`."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, tiny_model
from test_train_reward import make_fixture

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.dpo.config import DPOTrainConfig
from rlhf.dpo.pairs import CACHE_FILE, logprobs_of_pairs, pair_logprobs, reference_logprobs
from rlhf.dpo.train import train
from rlhf.lm.folders import load_model, read_safetensors
from rlhf.lm.logprobs import token_logprobs
from rlhf.preferences.data import encode_pairs, prepare_data
from rlhf.preferences.losses import dpo_loss, ipo_loss, preference_loss


def sp(x):
    return math.log1p(math.exp(x))


def test_dpo_loss_by_hand():
    hc, hr = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-1.0, 1.0, 0.5])
    # beta 0.5: d = beta (hc - hr) = [1, -1.5, 0]; loss = softplus(-d)
    want = [sp(-1.0), sp(1.5), math.log(2)]
    torch.testing.assert_close(dpo_loss(hc, hr, 0.5), torch.tensor(want), atol=1e-6, rtol=0)
    # tie target 1/2 at d = 1: 0.5 softplus(-1) + 0.5 softplus(1) = 0.5 (1 + 2 softplus(-1))
    t = torch.tensor([0.5, 1.0, 1.0])
    got = dpo_loss(hc, hr, 0.5, target=t)
    assert abs(float(got[0]) - 0.5 * (sp(-1.0) + sp(1.0))) < 1e-6
    # label smoothing 0.1 (conservative DPO): 0.9 softplus(-d) + 0.1 softplus(d)
    got = dpo_loss(hc, hr, 0.5, label_smoothing=0.1)
    assert abs(float(got[1]) - (0.9 * sp(1.5) + 0.1 * sp(-1.5))) < 1e-6
    assert abs(float(dpo_loss(hc, hr, 0.5, target=t, label_smoothing=0.1)[0])
               - 0.5 * (sp(-1.0) + sp(1.0))) < 1e-6  # a tie stays 1/2
    # margin 1/3 (implicit-reward units): softplus(-(d - m))
    m = torch.tensor([1 / 3, 0.0, 0.0])
    assert abs(float(dpo_loss(hc, hr, 0.5, margin=m)[0]) - sp(-(1 - 1 / 3))) < 1e-6
    # it is the Bradley-Terry preference loss on implicit rewards (no second copy)
    torch.testing.assert_close(dpo_loss(hc, hr, 0.5, t, m),
                               preference_loss(0.5 * hc, 0.5 * hr, t, m))


def test_ipo_loss_by_hand():
    hc, hr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    # beta (tau) 0.25: target gap 1 / (2 tau) = 2 -> (1 - 2)^2 = 1, (0 - 2)^2 = 4
    torch.testing.assert_close(ipo_loss(hc, hr, 0.25), torch.tensor([1.0, 4.0]))
    # a tie's target gap is 0: (1 - 0)^2, (0 - 0)^2
    torch.testing.assert_close(ipo_loss(hc, hr, 0.25, target=torch.tensor([0.5, 0.5])),
                               torch.tensor([1.0, 0.0]))
    # margin 0.25 adds 0.25 / tau = 1 to the target gap: (1 - 3)^2
    assert abs(float(ipo_loss(hc, hr, 0.25, margin=torch.tensor([0.25, 0.0]))[0]) - 4.0) < 1e-6


def test_dpo_gradient_by_hand():
    hc = torch.tensor([0.3], requires_grad=True)
    dpo_loss(hc, torch.tensor([0.1]), 2.0).sum().backward()
    # d loss / d hc = -beta sigmoid(-beta (hc - hr)) = -2 sigmoid(-0.4)
    assert abs(float(hc.grad) + 2 / (1 + math.exp(0.4))) < 1e-6


def separate_logprob(model, ids, skip):
    """log p of ids[skip:] given what comes before, the side alone in its own row."""
    t = torch.tensor([ids])
    with torch.no_grad():
        return float(token_logprobs(model(t), t)[0, skip - 1:].sum())


def test_packed_logprobs_equal_separate_rows():
    model = tiny_model(vocab_size=64)
    g = torch.Generator().manual_seed(0)
    chosen, rejected = [], []
    for i in range(6):
        prefix = [1] + torch.randint(3, 64, (1 + i,), generator=g).tolist()
        chosen.append(prefix + torch.randint(3, 64, (2 + i % 3,), generator=g).tolist() + [2])
        rejected.append(prefix + torch.randint(3, 64, (1 + 2 * i,), generator=g).tolist() + [2])
    with torch.no_grad():
        c, r = pair_logprobs(model, chosen, rejected, "cpu")
    for i in range(6):
        p = next(k for k in range(len(chosen[i])) if chosen[i][k] != rejected[i][k])
        assert abs(float(c[i]) - separate_logprob(model, chosen[i], p)) < 1e-5
        assert abs(float(r[i]) - separate_logprob(model, rejected[i], p)) < 1e-5


def config(model_dir, store, out, *extra):
    return load_config(DPOTrainConfig, None, [
        f"out_dir={out}", f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
        "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=5", "progress=false",
        "loss.beta=0.5", "runtime.threads=1", *extra])


def test_cached_reference_equals_a_fresh_pass(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=80)
    cfg = config(model_dir, store, tmp_path / "run", "train.max_steps=2")
    train(cfg)
    cache = read_safetensors_file(tmp_path / "run" / CACHE_FILE)
    ref, tok = load_model(model_dir)
    train_d, val_d = prepare_data(cfg, tok)
    fresh_c, fresh_r = logprobs_of_pairs(ref.eval(), train_d, "cpu", batch_size=1)
    assert cache["train.chosen"].shape == (len(train_d),)
    torch.testing.assert_close(cache["train.chosen"], fresh_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(cache["train.rejected"], fresh_r, atol=1e-5, rtol=0)
    # read back, not recomputed (no model given); other pairs -> not reused
    again = reference_logprobs(None, {"train": train_d, "val": val_d}, tmp_path / "run",
                               str(model_dir), 64, "cpu")
    torch.testing.assert_close(again["val.rejected"], cache["val.rejected"], atol=0, rtol=0)
    with pytest.raises(FileNotFoundError):
        reference_logprobs(None, {"train": val_d}, tmp_path / "run", str(model_dir), 64, "cpu")


def read_safetensors_file(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_learns_known_rule_to_90_percent_held_out(tmp_path):
    model_dir, store = make_fixture(tmp_path)
    s = train(config(model_dir, store, tmp_path / "run", "train.max_steps=60",
                     "train.eval_every=30"))
    assert s["last_val_accuracy"] > 0.9, s
    assert 0.3 < s["last_val_length_rule_accuracy"] < 0.7  # the rule is not length
    assert s["last_val_mean_margin"] > 0
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), float)]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5
    for f in ("config.yaml", "policy/dpo.json", "policy/config.json", "dpo.png", CACHE_FILE):
        assert (tmp_path / "run" / f).is_file(), f


def test_ipo_and_ties_train(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=200)
    s = train(config(model_dir, store, tmp_path / "ipo", "train.max_steps=30", "loss.kind=ipo",
                     "loss.beta=0.1", "data.ties=drop"))
    assert s["last_val_accuracy"] > 0.8, s


def test_resume_after_a_kill_is_exact(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=200)
    common = ["train.max_steps=12", "train.eval_every=4", "train.save_every=2"]
    train(config(model_dir, store, tmp_path / "a", *common))
    # a process killed (SIGKILL) after its first checkpoints, then the same command again
    args = [f"out_dir={tmp_path / 'b'}", f"model.init={model_dir}", f"data.paths=[{store}]",
            "data.max_len=64", "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=5",
            "progress=false", "loss.beta=0.5", "runtime.threads=1", *common]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    slow = "import time, rlhf.dpo.train as t; f = t.accumulated_step\n" \
           "def g(*a, **k):\n    time.sleep(0.5); return f(*a, **k)\n" \
           "t.accumulated_step = g\nimport sys; sys.exit(t.cli(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", slow, *args], env=env, cwd=ROOT)
    state = tmp_path / "b" / "state" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["meta"]["step"] >= 4:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "policy").exists()
    assert main(["train-dpo", *args]) == 0
    a, b = (read_safetensors(tmp_path / r / "policy") for r in "ab")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    steps = [json.loads(x).get("step") for x in (tmp_path / "b/metrics.jsonl").read_text()
             .splitlines() if "lr" in json.loads(x)]
    assert steps == list(range(1, 13))  # no step logged twice after the resume


def test_eval_reward_reads_a_dpo_policy(tmp_path, capsys):
    model_dir, store = make_fixture(tmp_path, n=200)
    s = train(config(model_dir, store, tmp_path / "run", "train.max_steps=30"))
    capsys.readouterr()
    assert main(["eval-reward", f"model={tmp_path / 'run/policy'}", f"data=[{store}]",
                 "split=val", "val_fraction=0.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["accuracy"] - s["last_val_accuracy"]) < 1e-6  # same pairs, same numbers
    assert "implicit_reward" in out and out["pairs"] == s["val_pairs"]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="loss.beta"):
        load_config(DPOTrainConfig, None, ["loss.beta=0"])
    with pytest.raises(ConfigError, match="loss.kind"):
        load_config(DPOTrainConfig, None, ["loss.kind=kto"])
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        load_config(DPOTrainConfig, None, ["loss.label_smoothing=0.7"])
    assert load_config(DPOTrainConfig, None, []).train.lr == 5e-4
    assert main(["train-dpo", "loss.betaa=1"]) == 2


def test_encode_pairs_shared_prefix_is_prompt(tmp_path):
    """On HH-style text the shared prefix covers the prompt, so both sides' sums differ only
    in their responses' tokens."""
    from test_train_reward import TOK

    from rlhf.feedback.derive import PreferencePair
    from rlhf.lm.tokenizer import Llama2cTokenizer

    if not TOK.is_file():
        pytest.skip("needs the stories260K tokenizer")
    tok = Llama2cTokenizer(TOK)
    d = encode_pairs([PreferencePair("Once upon a time", " a cat sat.", " a dog ran.")], tok, 64,
                     False)
    assert d.chosen[0][:5] == d.rejected[0][:5]
