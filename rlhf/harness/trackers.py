"""Experiment trackers (`runtime.report_to`): TensorBoard, Weights & Biases, MLflow.

They are fed by the writers of the run's own records, so they hold the same numbers:
`rlhf.harness.runtime.MetricsLog` passes each `metrics.jsonl` row on (step = the row's `step`),
the loop each round's record of `rounds.jsonl` (step = the round). Only rank 0 writes either.

What a tracker gets of a row (`scalars`): every int or float; a nested mapping flattened with
'/' (`eval/gold`, `seconds/policy`); strings, lists, booleans and None are skipped (they stay
in the JSON file); the step key itself is the x-axis, not a metric.

Where each writes, by default inside the run folder:
- tensorboard: `RUN/tensorboard/` (`tensorboard --logdir RUN`); a restarted run hides the
  events after the step it resumed from (`purge_step`), as `metrics.jsonl` drops those rows.
- wandb: a run named after the folder, in `RUN/wandb/` (or `WANDB_DIR`); `WANDB_MODE`,
  `WANDB_PROJECT` (default "rlhf") and the login are wandb's own; the run's config.yaml is its
  config. Each start of a process is a new W&B run.
- mlflow: `MLFLOW_TRACKING_URI`, else the SQLite store `RUN/mlflow.db`; the experiment
  `MLFLOW_EXPERIMENT_NAME` (default "rlhf"); each start of a process is a new MLflow run.
  A folder store (`MLFLOW_TRACKING_URI=file:///.../mlruns`) is MLflow's own choice to allow:
  MLflow 3 refuses it unless `MLFLOW_ALLOW_FILE_STORE=true` (the hint says so).

Each library is imported only when chosen; `rlhf.config.RuntimeConfig.check` has already said
in one line which one is missing. A tracker that cannot start is one `UserError` line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import yaml

from rlhf.config import UserError


def scalars(row: dict, skip: str = "step", prefix: str = "") -> dict[str, float]:
    """The numbers of a record, as a tracker takes them: ints and floats (nan and inf kept),
    nested mappings flattened with '/'; strings, lists, booleans, None and the key `skip`
    (the step) left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, "", name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != skip:
            out[name] = float(value)
    return out


class Tracker(Protocol):
    """One library's run: numbers at a step, then closed."""

    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def run_name(folder: Path) -> str:
    """A run's name in W&B and MLflow: its folder's last two parts (`round_01/reward_model`)."""
    return "/".join(folder.resolve().parts[-2:])


def saved_config(folder: Path) -> dict:
    """The run folder's resolved config.yaml ({} when it has none)."""
    path = folder / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


class TensorBoard:
    """Scalars to `folder/tensorboard` through torch's SummaryWriter (tensorboard's format)."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=purge_step,
                                    flush_secs=10)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run (offline with WANDB_MODE=offline: a folder to `wandb sync`)."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        import wandb

        where = None if os.environ.get("WANDB_DIR") else str(folder)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlhf"),
                              name=run_name(folder), dir=where, config=saved_config(folder),
                              reinit="create_new")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    """An MLflow run in the store of MLFLOW_TRACKING_URI, else `folder/mlflow.db` (SQLite)."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder.resolve()}/mlflow.db"
        self.client = mlflow.MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlhf")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=run_name(folder)).info.run_id
        params = [mlflow.entities.Param(k, str(v)[:500])
                  for k, v in flat(saved_config(folder)).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        ms = int(time.time() * 1000)
        metrics = [self.mlflow.entities.Metric(k, v, ms, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def flat(d: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys (`train.lr`)."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


KINDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
"""`runtime.report_to` names -> tracker classes."""
HINTS = {"wandb": " (no login: WANDB_MODE=offline)", "mlflow": " (another store: "
         "MLFLOW_TRACKING_URI; a folder store such as file:./mlruns also needs "
         "MLFLOW_ALLOW_FILE_STORE=true)"}
"""What to try when a tracker cannot start, said after the library's message."""


class Trackers:
    """The trackers `report_to` names for the run folder `folder`, opened at the first record
    (so a resumed run knows its step first) and closed by `close` (also as a context manager).
    No names: every call does nothing."""

    def __init__(self, report_to, folder: str | Path):
        self.names = list(report_to)
        self.folder = Path(folder)
        self.purge_step: int | None = None
        self.open: list[Tracker] | None = None

    def resumed_at(self, step: int) -> None:
        """The run restarts after `step`: later records (logged before) are hidden where the
        tracker can (TensorBoard)."""
        self.purge_step = step + 1

    def log(self, row: dict, step: int, skip: str = "step") -> None:
        """`scalars(row)` at `step` to every tracker (opening them the first time)."""
        if not self.names:
            return
        if self.open is None:
            self.open = []  # filled one by one: those started are closed if a later one fails
            for name in self.names:
                self.open.append(self.start(name))
        values = scalars(row, skip)
        for tracker in self.open:
            tracker.log(values, step)

    def start(self, name: str) -> Tracker:
        try:
            return KINDS[name](self.folder, self.purge_step)
        except Exception as e:  # the library's own error, whatever its type: one line
            what = " ".join(str(e).split())[:300] or type(e).__name__
            raise UserError(f"runtime.report_to: {name} could not start for {self.folder}: "
                            f"{what}{HINTS.get(name, '')}") from None

    def close(self) -> None:
        for tracker in self.open or ():
            tracker.close()
        self.open = None

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
