"""Every failure a clear line and nothing lost: the checkpoint swap, checksums, non-finite
losses, the run-folder lock, changed settings on resume, SIGINT/SIGTERM, a read-only or full
out_dir, bad config files, bad import files, the run's summaries after resumes."""

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, STORIES, need_shared
from test_train_reward import config, make_fixture

from rlhf.cli import main
from rlhf.config import ConfigError
from rlhf.feedback.formats import detect_format, read_any
from rlhf.feedback.records import RecordError
from rlhf.harness import state as S
from rlhf.harness.folder import ConfigChanged, RunFolderBusy, lock, unlock
from rlhf.harness.state import NonFiniteError
from rlhf.lm.folders import read_safetensors
from rlhf.reward import train as reward_train
from rlhf.reward.train import train

COMMON = ("train.max_steps=8", "model.n_members=2", "train.eval_every=0")


@pytest.fixture
def fixture(tmp_path):
    return make_fixture(tmp_path, n=200)


def args(model_dir, store, out, *extra) -> list[str]:
    return [f"out_dir={out}", f"model.init={model_dir}", f"data.paths=[{store}]",
            "data.max_len=64", "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=5",
            "progress=false", "runtime.threads=1", *COMMON, *extra]


def same_model(a: Path, b: Path) -> bool:
    x, y = read_safetensors(a / "model"), read_safetensors(b / "model")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def resumed_from(out: Path) -> list[int]:
    """The step each segment of a run started at (its `data` event rows)."""
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r.get("event") == "data"]


@pytest.fixture
def reference(fixture, tmp_path):
    model_dir, store = fixture
    train(config(model_dir, store, tmp_path / "ref", *COMMON))
    return tmp_path / "ref"


# ----------------------------------------------------------------------------- the swap


class Killed(BaseException):
    pass


def test_kill_between_the_two_renames_resumes_from_the_old_state(fixture, reference, tmp_path,
                                                                   monkeypatch):
    model_dir, store = fixture
    out = tmp_path / "run"
    real = os.replace

    def dying_replace(src, dst):
        src, dst = Path(src), Path(dst)
        if src.name == "state.tmp" and (dst.parent / "state.old").exists() \
                and not dst.exists():
            raise Killed  # the process dies after `state` -> `state.old`
        return real(src, dst)

    monkeypatch.setattr(S.os, "replace", dying_replace)
    with pytest.raises(Killed):
        train(config(model_dir, store, out, *COMMON, "train.save_every=2"))
    monkeypatch.setattr(S.os, "replace", real)
    assert not (out / "state").exists() and (out / "state.old").is_dir()
    train(config(model_dir, store, out, *COMMON, "train.save_every=2"))
    assert resumed_from(out) == [0, 2]  # from state.old (step 2), not from step 0
    assert same_model(out, reference)


def test_a_kill_before_the_first_state_logs_each_step_once(fixture, reference, tmp_path,
                                                           monkeypatch):
    model_dir, store = fixture
    out = tmp_path / "run"
    real, calls = reward_train.accumulated_step, []

    def dies_at_three(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real(*a, **kw)

    monkeypatch.setattr(reward_train, "accumulated_step", dies_at_three)
    with pytest.raises(Killed):
        train(config(model_dir, store, out, *COMMON))
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # and a row the kill cut short
    monkeypatch.setattr(reward_train, "accumulated_step", real)
    train(config(model_dir, store, out, *COMMON))
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    assert same_model(out, reference)


def test_the_swap_keeps_the_previous_state_and_fsyncs_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(S.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    m = torch.nn.Linear(2, 2)
    S.save_state(tmp_path / "state", {"m": m}, {}, {"step": 1})
    S.save_state(tmp_path / "state", {"m": m}, {}, {"step": 2})
    assert S.state_meta(tmp_path / "state")["step"] == 2
    assert json.loads((tmp_path / "state.old/state.json").read_text())["meta"]["step"] == 1
    assert len(synced) >= 2 * 4  # two files, the new folder, the parent (after each rename)


# ----------------------------------------------------------------------------- checksums


def damage(file: Path, prefix: str = "module.") -> None:
    """400 bytes of 0xFF into the first tensor whose name starts with `prefix`."""
    raw = file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = max((k for k in header if k.startswith(prefix)),
               key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
    start = 8 + n + header[name]["data_offsets"][0]
    with open(file, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * 400)


def test_a_damaged_tensor_is_refused_and_the_previous_state_used(fixture, reference, tmp_path,
                                                                  capsys):
    model_dir, store = fixture
    out = tmp_path / "run"
    train(config(model_dir, store, out, *COMMON, "train.save_every=2", "train.stop_at=4"))
    damage(out / "state" / "tensors.safetensors")
    train(config(model_dir, store, out, *COMMON, "train.save_every=2"))
    err = capsys.readouterr().err
    assert "tensors.safetensors: tensor 'module.rm." in err and "match its checksum" in err
    assert f"previous complete state {out / 'state.old'} (step 2)" in err
    assert resumed_from(out) == [0, 2]
    assert same_model(out, reference)  # no NaN model, the uninterrupted result


@pytest.mark.parametrize("how", ["tensor", "truncated", "state.json"])
def test_a_damaged_state_with_nothing_to_fall_back_to_is_one_line(fixture, tmp_path, capsys,
                                                                   how):
    model_dir, store = fixture
    out = tmp_path / "run"
    assert main(["train-reward", *args(model_dir, store, out)]) == 0  # a finished run
    tensors = out / "state" / "tensors.safetensors"
    if how == "tensor":
        damage(tensors)
    elif how == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    else:
        (out / "state" / "state.json").write_text('{"meta": {"step": 3')
    capsys.readouterr()
    assert main(["train-reward", *args(model_dir, store, out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "state") in err[0], err
    assert "Traceback" not in err[0]


# ----------------------------------------------------------------------------- non-finite


def test_a_non_finite_loss_stops_training_keeping_the_last_good_state(fixture, tmp_path,
                                                                      monkeypatch):
    model_dir, store = fixture
    out = tmp_path / "run"
    real, calls = reward_train.accumulated_step, []

    def nan_at_five(*a, **kw):
        m = real(*a, **kw)
        calls.append(1)
        return {**m, "loss": float("nan")} if len(calls) == 5 else m

    monkeypatch.setattr(reward_train, "accumulated_step", nan_at_five)
    with pytest.raises(NonFiniteError, match="step 5: the loss is nan"):
        train(config(model_dir, store, out, *COMMON, "train.save_every=2"))
    assert S.state_meta(out / "state")["step"] == 4
    assert not (out / "model").exists()


def test_a_non_finite_weight_is_never_saved(tmp_path):
    m = torch.nn.Linear(2, 2)
    S.save_state(tmp_path / "state", {"m": m}, {}, {"step": 1})
    with torch.no_grad():
        m.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="module.m.weight"):
        S.save_state(tmp_path / "state", {"m": m}, {}, {"step": 2})
    assert S.state_meta(tmp_path / "state")["step"] == 1


# ----------------------------------------------------------------------------- the lock


def test_two_runs_on_one_out_dir(fixture, tmp_path, capsys):
    """A second process on a folder a live run holds is refused, naming the holder's pid; once
    the holder is killed (-9) its lock is stale and the next run goes ahead."""
    model_dir, store = fixture
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "rlhf", "train-reward",
                              *args(model_dir, store, out, "train.max_steps=100000")],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.05)
        assert main(["train-reward", *args(model_dir, store, out, "train.lr=1e-3")]) == 2
        err = capsys.readouterr().err
        assert f"in use by another run (pid {first.pid}," in err and len(err.splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    train(config(model_dir, store, out, *COMMON, "resume=false"))
    assert "stale lock" in capsys.readouterr().err


def test_the_lock_is_reentrant_and_released(tmp_path):
    lock(tmp_path)
    lock(tmp_path)  # the loop and its stages nest
    unlock(tmp_path)
    code = ("from pathlib import Path; from rlhf.harness.folder import lock; "
            f"lock(Path({str(tmp_path)!r}))")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    assert RunFolderBusy.__name__ in r.stderr and f"pid {os.getpid()}" in r.stderr
    unlock(tmp_path)
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lock(tmp_path)  # that process ended holding it: the lock is stale, taken over
    unlock(tmp_path)
    assert (tmp_path / ".lock").read_text() == ""  # a clean end leaves nothing stale


# ----------------------------------------------------------------------------- changed settings


def test_resuming_with_other_settings_is_refused_unless_allowed(fixture, tmp_path, capsys,
                                                                monkeypatch):
    model_dir, store = fixture
    monkeypatch.setenv("RLHF_ALLOW_CHANGED", "")  # (restored after the test)
    out = tmp_path / "run"
    train(config(model_dir, store, out, *COMMON, "train.stop_at=3"))
    saved = (out / "config.yaml").read_text()
    with pytest.raises(ConfigChanged, match=r"train\.lr \(0\.003 -> 0\.001\)"):
        train(config(model_dir, store, out, *COMMON, "train.lr=1e-3"))
    assert (out / "config.yaml").read_text() == saved  # not overwritten
    capsys.readouterr()
    assert main(["train-reward", *args(model_dir, store, out, "train.lr=1e-3"),
                 "--allow-changed", "train.lr"]) == 0
    err = capsys.readouterr().err
    assert "train.lr changed: 0.003 -> 0.001" in err
    change = json.loads((out / "config_changes.jsonl").read_text().splitlines()[0])
    assert (change["key"], change["saved"], change["now"]) == ("train.lr", 0.003, 0.001)


# ----------------------------------------------------------------------------- signals


def start(model_dir, store, out, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlhf", "train-reward",
                             *args(model_dir, store, out, *extra)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(out: Path, step: int, proc) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file():
            rows = (out / "metrics.jsonl").read_text().splitlines()
            if sum('"loss"' in r for r in rows) >= step:
                return
        time.sleep(0.02)
    pytest.fail("the run did not get there")


def test_sigterm_mid_run_saves_then_resume_is_bit_identical(fixture, tmp_path):
    model_dir, store = fixture
    out, ref = tmp_path / "run", tmp_path / "ref40"
    proc = start(model_dir, store, out, "train.max_steps=40", "train.save_every=0")
    wait_for_step(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM after step" in last and "run the same command again" in last
    assert "Traceback" not in err
    step = S.state_meta(out / "state")["step"]
    assert 2 <= step < 40 and f"after step {step} " in last
    run40 = (*COMMON, "train.max_steps=40", "train.save_every=0")
    train(config(model_dir, store, out, *run40))
    assert resumed_from(out) == [0, step]
    train(config(model_dir, store, ref, *run40))
    assert same_model(out, ref)


def test_sigint_saves_and_a_second_one_exits_at_once(fixture, tmp_path, monkeypatch, capsys):
    model_dir, store = fixture
    out = tmp_path / "run"
    proc = start(model_dir, store, out, "train.max_steps=100000", "train.save_every=0")
    wait_for_step(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopped by SIGINT" in err and "Traceback" not in err
    assert S.state_meta(out / "state")["step"] >= 2
    from rlhf.harness import folder as runfolder  # the run folder module

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(runfolder.os, "_exit", exit_now)
    runfolder.catch_signals()
    try:
        runfolder._on_signal(signal.SIGINT, None)  # the first: a flag, the step goes on
        assert runfolder.stop_signal(runfolder.dist.DistInfo()) == signal.SIGINT
        with pytest.raises(SystemExit) as e:
            runfolder._on_signal(signal.SIGINT, None)  # the second: at once
        assert e.value.code == 130 and "second interrupt" in capsys.readouterr().err
    finally:
        runfolder.release_signals()


# ----------------------------------------------------------------------------- read-only, full


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def test_a_full_out_dir_is_one_line_and_keeps_the_previous_state(fixture, tmp_path, capsys,
                                                                 monkeypatch):
    """Simulated ENOSPC while the second state is written: one line, the first state whole."""
    model_dir, store = fixture
    out = tmp_path / "run"
    real, calls = S.save_file, []

    def full_disk(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # half-written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path)

    monkeypatch.setattr(S, "save_file", full_disk)
    assert main(["train-reward", *args(model_dir, store, out, "train.save_every=2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(out / "state") in err[0]
    assert "previous state is kept" in err[0]
    assert S.state_meta(out / "state")["step"] == 2 and not (out / "state.tmp").exists()
    S.read_verified(out / "state")  # whole


def test_a_real_full_and_a_read_only_tmpfs(fixture, tmp_path, capsys):
    """The same on a 64 KiB tmpfs (room for config and metrics, not for a state), and on a
    read-only one (skipped where tmpfs cannot be mounted)."""
    model_dir, store = fixture
    full, ro = tmp_path / "full", tmp_path / "ro"
    if not mount_tmpfs(full, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        assert main(["train-reward", *args(model_dir, store, full / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0], err
        assert str(full / "run") in err[0]
    finally:
        subprocess.run(["umount", str(full)])
    assert mount_tmpfs(ro, "ro,size=64k")
    try:
        assert main(["train-reward", *args(model_dir, store, ro / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Read-only file system" in err[0] and str(ro / "run") in err[0]
    finally:
        subprocess.run(["umount", str(ro)])


# ----------------------------------------------------------------------------- configs


def test_duplicate_keys_name_both_lines(tmp_path):
    from rlhf.config import load_config
    from rlhf.reward.config import RewardTrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.1\n  batch_size: 4\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=rf"train\.lr: duplicate key \({p}:2 and line 4\)"):
        load_config(RewardTrainConfig, p)


def test_a_section_of_the_wrong_type_is_refused_even_when_overridden(tmp_path):
    from rlhf.config import load_config
    from rlhf.reward.config import RewardTrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match=rf"train: expected a mapping.*{p}:1"):
        load_config(RewardTrainConfig, p, ["train.max_steps=1"])
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(RewardTrainConfig, p)


def test_an_empty_config_is_an_error_unless_it_says_so(tmp_path):
    from rlhf.config import load_config
    from rlhf.reward.config import RewardTrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(RewardTrainConfig, p)
    p.write_text("{}\n")
    assert load_config(RewardTrainConfig, p) == RewardTrainConfig()


def test_a_batch_larger_than_the_data_is_refused(fixture, tmp_path, capsys):
    model_dir, store = fixture
    assert main(["train-reward", *args(model_dir, store, tmp_path / "r"),
                 "train.batch_size=512"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 512 is more than the" in err and "training pairs" in err


def test_policy_batch_larger_than_the_prompts_is_refused(tmp_path):
    from test_train_policy import PROMPTS, tiny_cfg

    from rlhf.policy.train import train as train_policy

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    need_shared()
    with pytest.raises(ConfigError, match="prompts.batch_prompts: 1000 is more than the 8 "):
        train_policy(tiny_cfg(STORIES, prompts, tmp_path / "p", "prompts.batch_prompts=1000",
                              "steps=1"))


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    assert main(["train-reward", "train.nope=1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["train-reward", "train.nope=1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("RLHF_DEBUG", "1")
    assert main(["train-reward", "train.nope=1"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- import files


def test_identical_sides_are_left_out_and_reported(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    rows = [{"prompt": "q", "chosen": "yes", "rejected": "no"},
            {"prompt": "q", "chosen": "same", "rejected": " same "},
            {"prompt": "r", "chosen": "a", "rejected": "b"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    comps = read_any(p)
    assert [c.a for c in comps] == ["yes", "a"]
    err = capsys.readouterr().err
    assert f"{p}: 1 pairs with identical sides left out" in err and f"{p}:2" in err


def test_format_detection_whatever_the_line_length(tmp_path):
    p = tmp_path / "long.jsonl"
    row = {"prompt": "x" * 200_000, "chosen": "a", "rejected": "b"}
    p.write_text(json.dumps(row) + "\n")
    assert detect_format(p) == "trl" and len(read_any(p)) == 1


def test_truncated_gz_and_non_utf8_are_one_line(tmp_path, capsys):
    gz = tmp_path / "t.jsonl.gz"
    data = gzip.compress(b"".join(json.dumps({"prompt": "q", "chosen": f"a{i}",
                                              "rejected": "b"}).encode() + b"\n"
                                  for i in range(2000)))
    gz.write_bytes(data[:len(data) // 2])
    with pytest.raises(RecordError, match="truncated or damaged gzip"):
        read_any(gz)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
                    b'{"prompt": "q", "chosen": "\xff", "rejected": "b"}\n')
    with pytest.raises(RecordError, match=rf"{bad}:2: not UTF-8"):
        read_any(bad, "trl")
    bad.write_bytes(b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    for f in (gz, bad):
        assert main(["import-pairs", str(f), "--out", str(tmp_path / "s.jsonl")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(f) in err[0]
    assert not (tmp_path / "s.jsonl").exists()  # atomic: nothing written


# ----------------------------------------------------------------------------- summaries


def test_policy_summary_is_the_runs_after_resumes_and_reruns(tmp_path):
    need_shared()
    from test_train_policy import PROMPTS, even_token_share, tiny_cfg

    from rlhf.policy.train import train as train_policy

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS * 2) + "\n")
    over = ("prompts.hold_out_every=4", "prompts.eval_prompts=2", "prompts.batch_prompts=2",
            "algo.k=2")

    def run(out, steps):
        return train_policy(tiny_cfg(STORIES, prompts, tmp_path / out, f"steps={steps}", *over),
                            score_fn=even_token_share)

    full = run("full", 3)
    run("cut", 1)
    run("cut", 2)
    resumed = run("cut", 3)
    assert full["eval_start"] is not None
    for key in ("eval_start", "reward_first", "reward_last", "kl_last", "eval_end"):
        assert resumed[key] == full[key], key
    assert run("full", 3) == full  # a finished run, rerun: its real summary
