"""Choose a linear probe's settings on the *training* prompts only (the held-out set unseen).

    python benchmarks/probe_selection.py configs/reward_pandalm_minilm.yaml [overrides]
        [--inner 0.25] [--poolings mean cls] [--lrs 1e-3 3e-3] [--wds 0 0.1 1]
        [--epochs 5 20 80]

The config's split by prompt gives the training pairs (the held-out part is dropped here);
their prompts are split again (`--inner`, another seed) into inner-train and inner-validation
prompts. The frozen encoder pools every side once per pooling (`rlhf.reward.probe`; cached
under runs/probe_features/), then for every (pooling, lr, weight decay, epochs) the heads are
trained exactly as `rlhf train-reward` with `model.train_backbone=false` trains them (the
same step, `accumulated_step` of `micro_batch_loss`, optimiser, warmup + cosine schedule and
batches) and scored on the inner-validation clear pairs. Prints one JSON line per setting and
the best last (highest inner accuracy; ties -> the lower inner loss). Write the winner into
the config and run `rlhf train-reward` for the held-out figure.

`--random-split 0.3` (for comparison only, never for choosing): a random 30% of *all* pairs
held out instead, prompts on both sides: the protocol of the issue's frozen-probe yardstick.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rlhf
from rlhf.config import load_config  # noqa: E402
from rlhf.harness import distributed as dist  # noqa: E402
from rlhf.harness.optim import lr_at  # noqa: E402
from rlhf.harness.run import accumulated_step  # noqa: E402
from rlhf.harness.runtime import setup  # noqa: E402
from rlhf.preferences.data import EncodedPairs, PairBatches, prepare_data  # noqa: E402
from rlhf.preferences.metrics import pair_metrics  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402
from rlhf.reward.model import RewardModel, init_reward_model  # noqa: E402
from rlhf.reward.probe import cache_features  # noqa: E402
from rlhf.reward.train import micro_batch_loss, prepare_model, reward_optimizer, set_rates  # noqa: E402


def inner_split(cfg: RewardTrainConfig, tok, inner: float):
    """(inner-train, inner-validation) encoded pairs, both from the config's training prompts
    (`data.select_fraction`: the held-out prompts are left out)."""
    return prepare_data(replace(cfg, data=replace(cfg.data, select_fraction=inner)), tok)


def random_split(cfg: RewardTrainConfig, tok, share: float):
    """For comparison only: a random `share` of *all* pairs held out, whatever their prompt
    (a prompt can be on both sides), as the issue's frozen-probe yardstick was measured."""
    every, _ = prepare_data(replace(cfg, data=replace(cfg.data, val_fraction=0.0)), tok)
    perm = torch.randperm(len(every), generator=torch.Generator().manual_seed(cfg.runtime.seed))
    n_out = round(share * len(every))
    return [subset(every, perm[n_out:].tolist()), subset(every, perm[:n_out].tolist())]


def subset(d: EncodedPairs, idx: list[int]) -> EncodedPairs:
    return EncodedPairs([d.chosen[i] for i in idx], [d.rejected[i] for i in idx], d.target[idx],
                        d.margin[idx], [d.len_chosen[i] for i in idx],
                        [d.len_rejected[i] for i in idx], 0)


def features(rm: RewardModel, data, pad_id: int, key: str) -> torch.Tensor:
    """`cache_features`, kept on disk by (config, split, pooling) so a new grid costs nothing."""
    path = Path("runs/probe_features") / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        return torch.load(path)
    f = cache_features(rm, data, pad_id, 64).features
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(f, path)
    return f


def fit_heads(cfg: RewardTrainConfig, backbone_rm: RewardModel, tok, fit, check) -> dict:
    """The heads trained on `fit` as `rlhf.reward.train.train` does; metrics on `check`."""
    rm = RewardModel(backbone_rm.backbone, cfg.model.n_members, cfg.runtime.seed,
                     backbone_rm.pooling, tok)
    prepare_model(rm, fit, cfg)
    opt = reward_optimizer(rm, cfg)
    info = dist.DistInfo()
    per_epoch = len(fit) // cfg.train.batch_size
    total = max(1, math.ceil(cfg.train.epochs * per_epoch))
    weights = torch.ones(len(fit), cfg.model.n_members)
    batches = PairBatches(fit.lengths(), cfg.train.batch_size, cfg.runtime.seed,
                          cfg.train.group_by_length)
    for step in range(total):
        set_rates(opt, lr_at(step, total, cfg.train.warmup_steps, cfg.train.lr,
                             cfg.train.min_lr_ratio), cfg)
        accumulated_step(rm, opt, batches(step), 1, lambda idx: micro_batch_loss(
            rm, fit, idx, weights, cfg, torch.device("cpu")), cfg.train.max_grad_norm, info)
    with torch.no_grad():
        f = check.features  # (N, 2, dim)
        r = rm(None, pooled=torch.cat([f[:, 0], f[:, 1]]))  # (2N, E)
    n = len(check)
    nu = getattr(rm, "log_nu", None)
    out = pair_metrics(r[:n], r[n:], check.target, torch.tensor(check.len_chosen),
                       torch.tensor(check.len_rejected), None if nu is None else nu.detach())
    return {k: v for k, v in out.items() if not isinstance(v, dict)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--inner", type=float, default=0.25)
    ap.add_argument("--poolings", nargs="+", default=["mean", "cls"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3])
    ap.add_argument("--wds", nargs="+", type=float, default=[0.0, 0.1, 1.0])
    ap.add_argument("--epochs", nargs="+", type=float, default=[5, 20, 80])
    ap.add_argument("--random-split", type=float, default=0.0,
                    help="for comparison only: hold out this share of all pairs at random "
                         "(prompts on both sides) instead of the inner split by prompt")
    a = ap.parse_args(argv)
    cfg = load_config(RewardTrainConfig, a.config, a.overrides)
    cfg = replace(cfg, model=replace(cfg.model, train_backbone=False))
    setup(cfg.runtime)
    rows = []
    for pooling in a.poolings:
        rm, tok = init_reward_model(cfg.model.init, cfg.model.n_members, cfg.runtime.seed,
                                    pooling, cfg.model.backbone)
        rm.backbone.requires_grad_(False)
        fit, check = (random_split(cfg, tok, a.random_split) if a.random_split
                      else inner_split(cfg, tok, a.inner))
        for name, d in (("fit", fit), ("check", check)):
            key = json.dumps([a.config, a.overrides, a.random_split or a.inner, pooling, name])
            d.features = features(rm, d, tok.pad_id, key)
        for lr in a.lrs:
            for wd in a.wds:
                for ep in a.epochs:
                    c = replace(cfg, train=replace(cfg.train, lr=lr, weight_decay=wd, epochs=ep))
                    m = fit_heads(c, rm, tok, fit, check)
                    row = {"pooling": pooling, "lr": lr, "weight_decay": wd, "epochs": ep,
                           "fit_pairs": len(fit), "check_pairs": len(check), **m}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: (r["accuracy"], -r["loss"]))
    print(json.dumps({"best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
