"""Reward training under torchrun (2 CPU processes, gloo), with DDP and with FSDP, equals the
single-process run with the same global batch, and a run saved with 2 processes resumes with
1. (Policy training under torchrun: tests/test_train_policy.py.)"""

import os
import subprocess
import sys

import pytest
import torch
from test_train_reward import config, make_fixture

from rlhf.lm.folders import read_safetensors
from rlhf.reward.train import train

COMMON = ["train.max_steps=4", "train.batch_size=8", "model.n_members=2", "train.eval_every=2",
          "train.warmup_steps=2"]


def torchrun(args: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "rlhf", "train-reward", *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one_and_resume_with_another_count(tmp_path, parallel):
    """One torchrun launch: 2 processes train steps 1-2 (state equals the 1-process state),
    then 1 process resumes that run to step 4 (model equals the uninterrupted 1-process run).
    With FSDP the weights and AdamW moments live in shards; the state holds them whole."""
    from safetensors.torch import load_file

    model_dir, store = make_fixture(tmp_path, n=120)
    base = [f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
            "train.lr=3e-3", "progress=false", "runtime.threads=1",
            f"runtime.parallel={parallel}", *COMMON]
    train(config(model_dir, store, tmp_path / "one", *COMMON, "train.stop_at=2"))
    one_at_2 = load_file(str(tmp_path / "one/state/tensors.safetensors"))
    torchrun([f"out_dir={tmp_path / 'two'}", *base, "train.stop_at=2"], tmp_path)
    two_at_2 = load_file(str(tmp_path / "two/state/tensors.safetensors"))
    assert not (tmp_path / "two/model").exists()
    for k in one_at_2:
        if k.startswith(("module.", "opt.")):  # weights and AdamW moments
            torch.testing.assert_close(two_at_2[k], one_at_2[k], atol=1e-5, rtol=0)
    rows = (tmp_path / "two/metrics.jsonl").read_text().splitlines()
    assert sum('"loss"' in r for r in rows) == 2  # written once (rank 0), not twice
    assert '"world_size": 2' in rows[0]
    assert f'"sharded": {str(parallel == "fsdp").lower()}' in rows[0]
    single = train(config(model_dir, store, tmp_path / "one", *COMMON))
    train(config(model_dir, store, tmp_path / "two", *COMMON))  # resumed with 1 process
    one, two = (read_safetensors(tmp_path / r / "model") for r in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=0)
    assert single["steps"] == 4

