"""Data in like TRL and `datasets`: the same pairs from JSONL, JSONL.gz, JSON.gz, parquet, a
`save_to_disk` folder and a DatasetDict split (and a parquet file with its own column names,
mapped by `data.columns`) train a reward model and a DPO policy to identical losses; a bad
mapping is one line naming the key; a Hub name without network is one line, at once."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import datasets
import pytest
from conftest import ROOT
from test_train_reward import tiny_backbone

from rlhf.config import ConfigError, load_config
from rlhf.dpo.config import DPOTrainConfig
from rlhf.dpo.train import train as train_dpo
from rlhf.feedback.datafiles import read_rows
from rlhf.feedback.formats import read_any
from rlhf.feedback.records import RecordError
from rlhf.kto.config import KTOTrainConfig
from rlhf.prompts import HubUnreachable, load_prompts
from rlhf.reward.config import EvalRewardConfig, RewardTrainConfig
from rlhf.reward.evaluate import cli as eval_reward
from rlhf.reward.train import train as train_reward
from rlhf.sft.config import SFTConfig

WORDS = "the cat dog sun tree ran big red blue sat".split()


def pairs(n: int = 24, shift: int = 0) -> list[dict]:
    """TRL explicit-prompt rows, a prompt each (so the split by prompt has 24 groups)."""
    return [{"prompt": f"{WORDS[(i + shift) % 10]} {WORDS[(3 * i) % 10]} {i}",
             "chosen": f" happy {WORDS[(i + 1) % 10]} {WORDS[(i + 4) % 10]}",
             "rejected": f" sad {WORDS[(i + 2) % 10]}"} for i in range(n)]


def containers(folder) -> dict[str, tuple[str, dict]]:
    """The same rows written each way: name -> (path, extra config overrides)."""
    rows = pairs()
    ds = datasets.Dataset.from_list(rows)
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(folder / "p.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(folder / "p.json.gz", "wt") as f:
        f.write(json.dumps(rows))
    ds.to_parquet(str(folder / "p.parquet"))
    ds.save_to_disk(str(folder / "saved"))
    decoy = datasets.Dataset.from_list(pairs(shift=5))  # other rows, in the default split
    datasets.DatasetDict({"train": decoy, "test": ds}).save_to_disk(str(folder / "dict"))
    theirs = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]}
              for r in rows]
    datasets.Dataset.from_list(theirs).to_parquet(str(folder / "theirs.parquet"))
    mapping = ["data.columns.question=prompt", "data.columns.good=chosen",
               "data.columns.bad=rejected"]
    return {"jsonl": (folder / "p.jsonl", []), "jsonl.gz": (folder / "p.jsonl.gz", []),
            "json.gz": (folder / "p.json.gz", []), "parquet": (folder / "p.parquet", []),
            "save_to_disk": (folder / "saved", []),
            "DatasetDict split": (folder / "dict", ["data.split=test"]),
            "parquet, own columns": (folder / "theirs.parquet", mapping)}


def losses(run) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "step" in r]


COMMON = ["data.max_len=32", "data.val_fraction=0.25", "train.batch_size=6",
          "train.max_steps=3", "train.warmup_steps=1", "train.eval_every=0", "progress=false",
          "runtime.threads=1", "resume=false"]


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_the_same_pairs_from_every_container_train_to_identical_losses(stage, tmp_path):
    model = tiny_backbone(tmp_path)
    cls, train = ((RewardTrainConfig, train_reward) if stage == "reward"
                  else (DPOTrainConfig, train_dpo))
    extra = ["model.n_members=1", "model.bootstrap=false"] if stage == "reward" else []
    got = {}
    for name, (path, over) in containers(tmp_path).items():
        out = tmp_path / f"run-{name.replace(' ', '_').replace(',', '')}"
        cfg = load_config(cls, None, [f"out_dir={out}", f"model.init={model}",
                                      f"data.paths=[{path}]", *COMMON, *extra, *over])
        train(cfg)
        got[name] = losses(out)
    first = got["jsonl"]
    assert len(first) == 3 and all(x > 0 for x in first)
    for name, ls in got.items():
        assert ls == first, (name, ls, first)  # identical, not close: the same batches
    # the DatasetDict's default split holds other rows: the split is what made them equal
    out = tmp_path / "run-default-split"
    train(load_config(cls, None, [f"out_dir={out}", f"model.init={model}",
                                  f"data.paths=[{tmp_path / 'dict'}]", *COMMON, *extra]))
    assert losses(out) != first


def test_a_bad_column_mapping_is_one_line_naming_the_key(tmp_path):
    for cls in (RewardTrainConfig, DPOTrainConfig, KTOTrainConfig, SFTConfig):
        with pytest.raises(ConfigError) as e:
            load_config(cls, None, ["data.paths=[x.jsonl]", "data.columns.question=promt"])
        msg = str(e.value)
        assert msg.startswith("data.columns.question: 'promt' is not a column name"), msg
        assert "\n" not in msg
    with pytest.raises(ConfigError, match="data.columns.b: 'prompt' is also the target of 'a'"):
        load_config(RewardTrainConfig, None, ["data.columns.a=prompt", "data.columns.b=prompt"])
    containers(tmp_path)
    theirs = tmp_path / "theirs.parquet"
    with pytest.raises(RecordError) as e:  # a column the file does not have
        read_any(theirs, columns={"questoin": "prompt"})
    assert str(e.value).startswith(f"{theirs}: row 1: no column 'questoin' to read as 'prompt'")
    assert "question, good, bad" in str(e.value)
    with pytest.raises(RecordError, match="already has a 'prompt' column"):
        read_rows(tmp_path / "p.parquet", columns={"chosen": "prompt"})


def test_column_mapping_reads_kto_and_sft_rows_and_import_pairs(tmp_path, capsys):
    from rlhf.cli import main
    from rlhf.feedback.formats import read_records
    from rlhf.feedback.records import Correction, Rating

    rows = [{"q": f"a {w}", "a": f" the {w} ran", "ok": i % 2 == 0} for i, w in enumerate(WORDS)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "kto"))
    got = read_records(tmp_path / "kto", columns={"q": "prompt", "a": "completion",
                                                  "ok": "label"})
    assert [type(r) for r in got] == [Rating] * 10  # its only split, read as TRL unpaired rows
    got = read_records(tmp_path / "kto", columns={"q": "prompt", "a": "completion"},
                       fmt="trl-prompt-completion")
    assert [type(r) for r in got] == [Correction] * 10
    store = tmp_path / "store.jsonl"
    assert main(["import-pairs", str(tmp_path / "kto"), "--column", "q=prompt", "--column",
                 "a=completion", "--column", "ok=label", "--out", str(store)]) == 0
    assert "imported 10 ratings" in capsys.readouterr().out
    assert main(["import-pairs", str(tmp_path / "kto"), "--column", "q=prmpt", "--out",
                 str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf import-pairs: error: --column q: 'prmpt'")


def test_a_hub_name_without_network_is_one_line_at_once(tmp_path, monkeypatch):
    # no answer: a local port nothing listens on (refused at once), offline mode not set
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for read in (lambda: read_any("some-org/some-pairs"),
                 lambda: load_prompts("some-org/some-prompts")):
        t0 = time.monotonic()
        with pytest.raises(HubUnreachable) as e:
            read()
        assert time.monotonic() - t0 < 5
        msg = str(e.value)
        assert "could not be reached" in msg and "save_to_disk('DIR')" in msg
        assert "HF_HUB_OFFLINE=1" in msg and "\n" not in msg


def test_a_hub_name_in_offline_mode_is_one_line_from_the_command(tmp_path):
    """HF_HUB_OFFLINE=1 (what a user without network sets): `rlhf train-reward` on a Hub
    name that is not in the cache says so in one line, exit 2, no traceback, in seconds."""
    model = tiny_backbone(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rlhf", "train-reward", "data.paths=[org/pairs]",
                        f"model.init={model}", f"out_dir={tmp_path / 'run'}", "progress=false"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    took = time.monotonic() - t0
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("rlhf train-reward: error: org/pairs: the Hub "
                                               "data set could not be reached (offline mode")
    assert "save_to_disk('DIR')" in err[0] and "Traceback" not in r.stderr
    assert took < 30, took  # the interpreter and torch start included; no retries


def test_eval_reward_reads_a_datasetdict_split_and_mapped_columns(tmp_path, capsys):
    """eval-reward takes `data_split` and `columns` as train-reward's data section does: the
    same pairs from JSONL, a DatasetDict's 'test' split and parquet with its own column names
    give the same figures; the DatasetDict's default split (other rows) does not."""
    model, paths = tiny_backbone(tmp_path), containers(tmp_path)
    out = tmp_path / "rm"
    train_reward(load_config(RewardTrainConfig, None, [
        f"out_dir={out}", f"model.init={model}", f"data.paths=[{paths['jsonl'][0]}]", *COMMON,
        "model.n_members=1", "model.bootstrap=false"]))

    def figures(*keys) -> dict:
        capsys.readouterr()
        assert eval_reward([f"model={out / 'model'}", "runtime.threads=1", *keys]) == 0
        return json.loads(capsys.readouterr().out)

    base = figures(f"data=[{paths['jsonl'][0]}]")
    assert base["pairs"] == 24
    assert figures(f"data=[{tmp_path / 'dict'}]", "data_split=test") == base
    assert figures(f"data=[{tmp_path / 'theirs.parquet'}]", "columns.question=prompt",
                   "columns.good=chosen", "columns.bad=rejected") == base
    assert figures(f"data=[{tmp_path / 'dict'}]") != base
    with pytest.raises(ConfigError, match="columns.question"):
        load_config(EvalRewardConfig, None, ["columns.question=nonsense"])
