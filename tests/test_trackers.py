"""`runtime.report_to`: TensorBoard, W&B and MLflow get the numbers of `metrics.jsonl` (and
the loop's `rounds.jsonl`), read back with each library's own reader; a missing library is
one line naming the key."""

import json
import math
import struct
import sys

import pytest
from conftest import STORIES, need_shared
from test_stage_cards import stage_args
from test_train_reward import config, make_fixture

from rlhf.cli import main
from rlhf.config import ConfigError, UserError, load_config
from rlhf.dpo.config import DPOTrainConfig
from rlhf.harness.runtime import MetricsLog
from rlhf.harness.trackers import scalars
from rlhf.kto.config import KTOTrainConfig
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run as run_loop
from rlhf.policy.config import PolicyTrainConfig
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.train import train
from rlhf.sft.config import SFTConfig


def rows_of(path):
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def expected_points(rows, step="step") -> dict[str, list]:
    """Written out without `scalars`: {key: [(step, value), ...]} of every int or float
    (not bool) of every row, in file order; the step key is the x-axis."""
    out: dict[str, list] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != step:
                out.setdefault(k, []).append((row[step], float(v)))
    return out


def every_number(rows, step="step") -> dict[str, list]:
    """`expected_points` with nested mappings flattened with '/' (`eval/gold`), written out
    here rather than with `scalars`; a row without the step key is at step 0."""
    out: dict[str, list] = {}

    def walk(row, at, prefix=""):
        for k, v in row.items():
            name = prefix + k
            if isinstance(v, dict):
                walk(v, at, name + "/")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and name != step:
                out.setdefault(name, []).append((at, float(v)))

    for row in rows:
        walk(row, row.get(step, 0))
    return out


def tensorboard_points(folder) -> dict[str, list]:
    """{tag: [(step, value), ...]} as tensorboard's own reader gives them back."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_points(got: dict, want: dict) -> None:
    """Same keys, steps and values (TensorBoard keeps float32: 1e-6 relative)."""
    assert sorted(got) == sorted(want)
    for key, points in want.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        for (_, a), (_, b) in zip(got[key], points):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-12) or (math.isnan(a) and
                                                                 math.isnan(b)), key


def test_scalars_by_hand():
    row = {"step": 3, "loss": 0.5, "n": 2, "ok": True, "event": "data", "warnings": ["w"],
           "none": None, "eval": {"gold": 0.25, "texts": ["x"], "deep": {"kl": 1.5}},
           "bad": float("nan")}
    got = scalars(row)
    assert set(got) == {"loss", "n", "eval/gold", "eval/deep/kl", "bad"}
    assert (got["loss"], got["n"], got["eval/gold"], got["eval/deep/kl"]) == (0.5, 2.0, 0.25, 1.5)
    assert math.isnan(got["bad"])
    assert set(scalars({"round": 1, "x": 2}, skip="round")) == {"x"}


def test_only_the_writing_rank_reports(tmp_path):
    pytest.importorskip("tensorboard")
    for rank, enabled in ((1, False), (0, True)):  # MetricsLog(enabled=info.is_main)
        log = MetricsLog(tmp_path / f"r{rank}" / "metrics.jsonl", enabled, ["tensorboard"])
        (tmp_path / f"r{rank}").mkdir()
        log.write(step=1, loss=0.5)
        log.close()
    assert not (tmp_path / "r1/tensorboard").exists()
    got = tensorboard_points(tmp_path / "r0/tensorboard")
    assert sorted(got) == ["loss", "time"] and got["loss"] == [(1, 0.5)]
    assert got["time"][0][0] == 1 and 0.0 <= got["time"][0][1] < 60.0  # seconds since start


def test_tensorboard_holds_every_metric_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    model_dir, store = make_fixture(tmp_path, n=120)
    out = tmp_path / "run"
    train(config(model_dir, store, out, "train.max_steps=6", "train.eval_every=3",
                 "runtime.report_to=[tensorboard]"))
    want = expected_points(rows_of(out / "metrics.jsonl"))
    assert {"loss", "accuracy", "lr", "grad_norm", "val_accuracy", "train_pairs"} <= set(want)
    assert [s for s, _ in want["loss"]] == [1, 2, 3, 4, 5, 6]
    assert_same_points(tensorboard_points(out / "tensorboard"), want)
    # a fresh start in the same folder: metrics.jsonl keeps only rows of step 0, and
    # TensorBoard hides the earlier run's later steps the same way (purge_step)
    train(config(model_dir, store, out, "train.max_steps=4", "train.eval_every=2",
                 "train.lr=1e-3", "resume=false", "runtime.report_to=[tensorboard]"))
    rows = rows_of(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 0, 1, 2, 3, 4]  # both runs' data rows
    want = expected_points(rows)
    assert_same_points(tensorboard_points(out / "tensorboard"), want)


def wandb_history(run_file) -> dict[tuple, float]:
    """{(step, key): value} of the history records of an offline run's `.wandb` file (a
    LevelDB-style log of wandb's protobuf `Record`s: 7-byte file header, 32 KiB blocks,
    each chunk crc32 (4) + length (2) + type (1: full, 2: first, 3: middle, 4: last))."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header: padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in record.history.item}
                out.update({(items["_step"], k): v for k, v in items.items()
                            if not k.startswith("_")})
    return out


def test_wandb_offline_writes_its_run_folder_with_the_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    model_dir, store = make_fixture(tmp_path, n=120)
    out = tmp_path / "run"
    train(config(model_dir, store, out, "train.max_steps=4", "train.eval_every=2",
                 "runtime.report_to=[wandb]"))
    folders = list((tmp_path / "wb/wandb").glob("offline-run-*"))
    assert len(folders) == 1 and not (out / "wandb").exists()  # WANDB_DIR is respected
    history = wandb_history(next(folders[0].glob("run-*.wandb")))
    want = {(s, k): v for k, pts in expected_points(rows_of(out / "metrics.jsonl")).items()
            for s, v in pts}
    assert ("loss", 4) in {(k, s) for s, k in want} and history == want


def test_mlflow_run_holds_every_metric(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    model_dir, store = make_fixture(tmp_path, n=120)
    out = tmp_path / "run"
    try:
        train(config(model_dir, store, out, "train.max_steps=3", "train.eval_every=3",
                     "runtime.report_to=[mlflow]"))
    except Exception as e:  # mlflow-skinny has no SQLite store
        if "could not start" in str(e):
            pytest.skip(f"this mlflow cannot write a local store: {e}")
        raise
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rlhf").experiment_id])
    assert run.info.run_name == f"{tmp_path.name}/run" and run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "3"
    want = expected_points(rows_of(out / "metrics.jsonl"))
    got = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
           for k in run.data.metrics}
    assert sorted(got) == sorted(want) and got == {k: sorted(v) for k, v in want.items()}


def test_the_loop_reports_its_round_curves_and_every_stage(tmp_path):
    pytest.importorskip("tensorboard")
    need_shared()
    out = tmp_path / "loop"
    cfg = load_config(LoopConfig, None, [
        "rounds=1", "pairs_per_round=8", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12", "reward.train.batch_size=4",
        "reward.train.epochs=1", "reward.data.val_fraction=0.25", "rl.steps=2",
        "rl.prompts.batch_prompts=2", "rl.algo.k=2",
        "runtime.report_to=[tensorboard]", f"out_dir={out}"])
    run_loop(cfg)
    rounds = rows_of(out / "rounds.jsonl")
    got = tensorboard_points(out / "tensorboard")
    evals = expected_points([{"round": r["round"], **r["eval"]} for r in rounds], "round")
    assert {"gold", "kl", "reward"} <= set(evals) and len(evals["gold"]) == 2  # rounds 0, 1
    assert [s for s, _ in got["eval/kl"]] == [0, 1] and got["eval/kl"][0][1] == 0.0
    assert_same_points({k.removeprefix("eval/"): v for k, v in got.items()
                        if k.startswith("eval/")}, evals)  # every number of every eval
    assert_same_points(got, every_number(rounds, "round"))  # and of the rest of each record
    for curve in ("eval/gold", "eval/kl", "eval/reward", "eval/win_rate"):  # round curves
        assert [s for s, _ in got[curve]] == [r["round"] for r in rounds if curve[5:] in
                                              r["eval"]], curve
    for stage in ("reward_model", "policy_train"):  # the loop's stages report too
        folder = out / "round_01" / stage
        assert_same_points(tensorboard_points(folder / "tensorboard"),
                           expected_points(rows_of(folder / "metrics.jsonl")))


@pytest.mark.parametrize("stage", ["sft", "dpo", "kto", "policy"])
def test_every_stage_reports_every_metric_to_tensorboard(tmp_path, stage):
    """Each stage's metrics.jsonl, every key (nested ones as `a/b`) at every step, is what
    tensorboard's own reader gives back from the stage's run folder."""
    pytest.importorskip("tensorboard")
    need_shared()
    out = tmp_path / stage
    assert main(stage_args(tmp_path, stage, out, "runtime.report_to=[tensorboard]")) == 0
    rows = rows_of(out / "metrics.jsonl")
    want = every_number(rows)
    assert "lr" in want or "reward" in want
    assert len({s for pts in want.values() for s, _ in pts}) >= 2  # more than one step
    assert_same_points(tensorboard_points(out / "tensorboard"), want)


def test_mlflow_to_a_local_folder_store(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI naming a folder (file:): MLflow 3 needs MLFLOW_ALLOW_FILE_STORE,
    and the one-line refusal says so; allowed, the store holds every metric."""
    mlflow = pytest.importorskip("mlflow")
    model_dir, store = make_fixture(tmp_path, n=120)
    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "stories")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    args = ["train.max_steps=3", "train.eval_every=3", "runtime.report_to=[mlflow]"]
    if int(mlflow.__version__.split(".")[0]) >= 3:
        with pytest.raises(UserError, match="mlflow could not start") as e:
            train(config(model_dir, store, tmp_path / "refused", *args))
        assert "MLFLOW_ALLOW_FILE_STORE=true" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    train(config(model_dir, store, out, *args))
    assert not (out / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("stories").experiment_id])
    assert run.info.status == "FINISHED"
    want = expected_points(rows_of(out / "metrics.jsonl"))
    got = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
           for k in run.data.metrics}
    assert sorted(got) == sorted(want) and got == {k: sorted(v) for k, v in want.items()}


@pytest.mark.parametrize("cls", [RewardTrainConfig, DPOTrainConfig, KTOTrainConfig, SFTConfig,
                                 PolicyTrainConfig, LoopConfig])
def test_a_missing_library_is_one_line_naming_the_key(cls, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, ["runtime.report_to=[wandb]"])
    assert str(e.value) == ("runtime.report_to: wandb needs `pip install wandb` "
                            "(command-line override 'runtime.report_to=[wandb]')")
    with pytest.raises(ConfigError, match=r"runtime.report_to\[0\]: must be one of"):
        load_config(cls, None, ["runtime.report_to=[tensorbord]"])


def test_the_command_line_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["train-reward", f"out_dir={tmp_path / 'run'}",
                 "runtime.report_to=[mlflow]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "runtime.report_to: mlflow needs `pip install mlflow`" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
