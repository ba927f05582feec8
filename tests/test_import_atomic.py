"""Imports and the files commands write are all or nothing on a full disk: `import-pairs`
leaves the store byte for byte as it was and says so in its own words; `--to trl`,
`--to dataset`, `export` and `sample-pairs` leave no partial output and no temporary file.
The full disk is injected (ENOSPC after some bytes), and is also a real 64 KiB tmpfs where
one can be mounted."""

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from rlhf import files as rlhf_files
from rlhf.cli import main
from rlhf.feedback import datafiles
from rlhf.feedback.store import ComparisonStore


def pairs_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"prompt {i}", "chosen": f"good {i} " * 5,
                                        "rejected": f"bad {i}"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def store(tmp_path):
    """A store holding two answers already (imported from a small file)."""
    s = tmp_path / "out" / "s.jsonl"
    assert main(["import-pairs", str(pairs_file(tmp_path / "first.jsonl", 2)),
                 "--out", str(s)]) == 0
    return s


def disk_full_after(monkeypatch, path: Path, room: int, at_fsync: bool = False) -> None:
    """`os.write` to `path` stores `room` bytes, then fails with ENOSPC (as a full disk
    does: part of the data is written); with `at_fsync`, the writes succeed and fsync fails."""
    real_write, real_fsync, left = os.write, os.fsync, [room]

    def target(fd) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            return False

    def write(fd, data):
        if at_fsync or not target(fd):
            return real_write(fd, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[:left[0]]))
        left[0] -= n
        return n

    def fsync(fd):
        if at_fsync and target(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("at_fsync", [False, True])
def test_an_import_onto_a_full_disk_leaves_the_store_as_it_was(tmp_path, store, capsys,
                                                                monkeypatch, at_fsync):
    before = store.read_bytes()
    src = pairs_file(tmp_path / "many.jsonl", 200)
    disk_full_after(monkeypatch, store, room=5000, at_fsync=at_fsync)
    assert main(["import-pairs", str(src), "--out", str(store)]) == 2
    line = one_line(capsys)
    assert line.startswith("rlhf import-pairs: error: ") and "No space left" in line
    assert "none of the 200 records was imported" in line and str(store) in line
    assert "answer" not in line  # worded for the import, not for a rater
    assert store.read_bytes() == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["s.jsonl"]
    monkeypatch.undo()
    assert main(["import-pairs", str(src), "--out", str(store)]) == 0  # retried: all of it
    assert len(ComparisonStore(store).load()) == 202


def test_an_import_onto_a_real_full_tmpfs(tmp_path, capsys):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        s = mnt / "s.jsonl"
        assert main(["import-pairs", str(pairs_file(tmp_path / "a.jsonl", 3)),
                     "--out", str(s)]) == 0
        capsys.readouterr()
        before = s.read_bytes()
        assert main(["import-pairs", str(pairs_file(tmp_path / "b.jsonl", 2000)),
                     "--out", str(s)]) == 2
        assert "none of the 2000 records was imported" in one_line(capsys)
        assert s.read_bytes() == before and sorted(os.listdir(mnt)) == ["s.jsonl"]
    finally:
        subprocess.run(["umount", str(mnt)])


class FullFile:
    """A text file whose writes fail with ENOSPC once `room` characters are written."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, s: str) -> int:
        if len(s) > self.room:
            self.f.write(s[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(s)
        return self.f.write(s)

    def writelines(self, lines) -> None:
        for s in lines:
            self.write(s)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_open(monkeypatch, module, room: int = 300) -> None:
    """`open` for writing, in `module`, gives files that fill after `room` characters."""
    def opener(path, mode="r", *a, **kw):
        f = open(path, mode, *a, **kw)
        return FullFile(f, room) if "w" in mode else f

    monkeypatch.setattr(module, "open", opener, raising=False)


@pytest.mark.parametrize("to,name", [("trl", "out.jsonl"), ("dataset", "out")])
def test_import_to_trl_or_a_dataset_on_a_full_disk_leaves_nothing(tmp_path, capsys,
                                                                   monkeypatch, to, name):
    src = pairs_file(tmp_path / "in.jsonl", 50)
    (tmp_path / "o").mkdir()
    out = tmp_path / "o" / name
    if to == "trl":
        full_open(monkeypatch, datafiles)
    else:
        def no_room(self, *a, **kw):
            Path(a[0]).mkdir()
            (Path(a[0]) / "data-00000-of-00001.arrow").write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("datasets.Dataset.save_to_disk", no_room)
    assert main(["import-pairs", str(src), "--to", to, "--out", str(out)]) == 2
    assert "No space left" in one_line(capsys)
    assert list((tmp_path / "o").iterdir()) == []


def test_export_on_a_full_disk_keeps_the_old_file(tmp_path, store, capsys, monkeypatch):
    out = tmp_path / "o" / "pairs.jsonl"
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(out)]) == 0
    capsys.readouterr()  # (its progress line)
    before = out.read_bytes()
    full_open(monkeypatch, datafiles, room=10)
    assert main(["export", str(store), "--to", "trl-preference", "--out", str(out)]) == 2
    assert "No space left" in one_line(capsys)
    assert out.read_bytes() == before and os.listdir(out.parent) == ["pairs.jsonl"]


def test_sample_pairs_on_a_full_disk_leaves_no_tmp(tmp_path, capsys, monkeypatch):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "a": "x", "b": "y"}) + "\n"
                           for i in range(40)))
    (tmp_path / "o").mkdir()
    out = tmp_path / "o" / "q.jsonl"
    full_open(monkeypatch, rlhf_files)  # queues are written by files.write_atomic
    assert main(["sample-pairs", "--from-pairs", str(src), "--out", str(out)]) == 2
    line = one_line(capsys)
    assert "No space left" in line and str(out) in line
    assert os.listdir(tmp_path / "o") == []
