"""`rlhf train-dpo` under torchrun (2 CPU processes, gloo), DDP and FSDP: the same state as one
process with the same global batch, and a run saved with 2 processes resumes with 1."""

import os
import subprocess
import sys

import pytest
import torch
from test_dpo import config
from test_train_reward import make_fixture

from rlhf.dpo.train import train
from rlhf.lm.folders import read_safetensors

COMMON = ["train.max_steps=4", "train.batch_size=8", "train.eval_every=2",
          "train.warmup_steps=2"]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one_and_resume_with_another_count(tmp_path, parallel):
    from safetensors.torch import load_file

    model_dir, store = make_fixture(tmp_path, n=120)
    args = [f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
            "train.lr=3e-3", "loss.beta=0.5", "progress=false", "runtime.threads=1",
            f"runtime.parallel={parallel}", *COMMON, "train.stop_at=2"]
    train(config(model_dir, store, tmp_path / "one", *COMMON, "train.stop_at=2"))
    one_at_2 = load_file(str(tmp_path / "one/state/tensors.safetensors"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "rlhf", "train-dpo", f"out_dir={tmp_path / 'two'}", *args]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two_at_2 = load_file(str(tmp_path / "two/state/tensors.safetensors"))
    for k in one_at_2:
        if k.startswith(("module.", "opt.")):  # weights and AdamW moments
            torch.testing.assert_close(two_at_2[k], one_at_2[k], atol=1e-5, rtol=0)
    rows = (tmp_path / "two/metrics.jsonl").read_text().splitlines()
    assert sum('"lr"' in r for r in rows) == 2 and '"world_size": 2' in rows[0]
    train(config(model_dir, store, tmp_path / "one", *COMMON))
    train(config(model_dir, store, tmp_path / "two", *COMMON))  # resumed with 1 process
    one, two = (read_safetensors(tmp_path / d / "policy") for d in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=0)
