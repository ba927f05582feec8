"""What every trainer shares, written once: a trainer is its own math and its own loop; this
package is everything else about a training run.

- `run`: the run of one stage (`training_run`, `TrainingRun`): the run folder, resume,
  checkpoints, signals, the finite-loss guard, progress and metrics; gradient accumulation.
- `folder`: the run folder's lock, the saved config and its check on resume, signals.
- `state`: atomic, checksummed training states and their exact restore.
- `progress`: the progress bar / plain progress lines; `runtime`: threads, seeds, device,
  precision and `metrics.jsonl`; `distributed`: torchrun, DDP and FSDP; `optim`: AdamW, the
  learning-rate schedule, gradient clipping; `trackers`: TensorBoard, W&B and MLflow
  (`runtime.report_to`), fed the rows of `metrics.jsonl`.

May import: the top-level modules (`rlhf.config`, `rlhf.prompts`).
"""
