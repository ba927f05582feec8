"""`rlhf train-policy`: fine-tune a policy against a reward, with a KL penalty to a reference.

One visible loop, `train(cfg)`, each step:
  (1) sample k responses for each of the step's prompts (one batched, KV-cached `generate`);
  (2) score them (a reward model, or a named scorer such as VADER sentiment);
  (3) shape the reward with the per-token KL to the frozen reference (`rlhf.rewards`);
  (4) advantages: RLOO leave-one-out, REINFORCE running-mean baseline, or PPO (group baseline);
  (5) update: one gradient step (RLOO, REINFORCE) or PPO epochs of minibatches;
  (6) log metrics, write samples, save a resumable state.

Data position and sampling seeds are functions of the step (and rank), so a resumed run, even
with another process count under `torchrun`, draws the same global prompt batches. Each rank
samples its `shard` of the global prompts; the k samples of a prompt stay on one rank;
batch statistics (normalisation, whitening, baselines, KL controller) use all ranks' values.

Run folder (`out_dir`): config.yaml, metrics.jsonl, samples/step_NNNNNN.jsonl (rank 0's
samples), samples/eval_start.jsonl and eval_end.jsonl (held-out prompts, fixed seed),
state/ (latest resumable state), policy/ (final policy, HF-style folder).
The configuration (`PolicyTrainConfig`) lives in `rlhf.policy_config`.

Reusable pieces: `make_score_fn(RewardConfig, tok, device)` -> score_fn(gen, texts) -> (B,);
`sample_and_score(model, tok, prompts, sampling, score_fn, generator, ref=None, k=1)` ->
mean reward, length, share ended and (with `ref`) KL k1/k3 per sequence of fresh samples,
plus the rows; `response_logprobs(model, gen, temperature)` -> log-probs (B, N) of a sample.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rlhf import distributed as dist
from rlhf import pg_losses as L
from rlhf import rewards as R
from rlhf.checkpoint import load_model, load_state, save_model, save_state
from rlhf.config import describe, load_config, save_config
from rlhf.generation import Generation, generate
from rlhf.model import entropy_from_logits
from rlhf.policy_config import AlgoConfig, PolicyTrainConfig, RewardConfig
from rlhf.prompts import load_prompts, split_prompts
from rlhf.runtime import MetricsLog, autocast, setup

# ----------------------------------------------------------------------------- helpers


def global_batch(n_prompts: int, step: int, batch: int, seed: int) -> list[int]:
    """Prompt indices of step `step`'s global batch: consecutive slices of an endless stream
    of shuffled passes over the prompts (pass e shuffled with seed + e)."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(pos, n_prompts)
        perm = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perm[i]))
    return out


def step_generator(seed: int, step: int, rank: int, device) -> torch.Generator:
    """The sampling RNG of one (step, rank): stateless, so resuming needs no RNG file."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step * 7919 + rank)


def texts_of(tok, gen: Generation, include_prompt: bool = True) -> list[str]:
    """Decoded text of each row: prompt + response (or the response alone)."""
    rows = gen.tokens if include_prompt else gen.responses
    masks = gen.mask if include_prompt else gen.response_mask
    return [tok.decode([t for t, m in zip(r, mk) if m]) for r, mk in
            zip(rows.tolist(), masks.tolist())]


def make_score_fn(cfg, tok, device):
    """The reward of a sampled batch: fn(gen, texts) -> (B,) float tensor on `device`."""
    if cfg.kind == "scorer":
        from rlhf.scorers import get_scorer

        scorer = get_scorer(cfg.scorer)

        def score(gen, texts):
            if not cfg.include_prompt:
                texts = texts_of(tok, gen, include_prompt=False)
            return torch.tensor(scorer(texts), dtype=torch.float32, device=device)
        return score
    from rlhf.reward_model import load_reward_model, score_texts, score_tokens

    rm, rm_tok = load_reward_model(cfg.path, device)
    if rm_tok.vocab_size != tok.vocab_size:  # another tokenizer: re-tokenise the full text
        return lambda gen, texts: score_texts(rm, rm_tok, [""] * len(texts), texts).to(device)
    return lambda gen, texts: score_tokens(rm, gen.tokens, gen.mask).float()


def response_logprobs(model, gen: Generation, temperature: float, entropy: str = "none"):
    """log pi(response token) under logits / temperature, from one forward pass of the padded
    batch: (B, N); and the per-token entropy (B, N) when `entropy` is "monitor" (no gradient)
    or "grad" (differentiable, for an entropy bonus), else None."""
    # the output layer only where a response token is predicted: positions P-1 .. P+N-2
    logits = model(gen.tokens, gen.mask, start=gen.prompt_width - 1)[:, :-1].float()  # (B,N,V)
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, gen.responses.unsqueeze(-1)).squeeze(-1)  # (B, N)
    logp = (picked - torch.logsumexp(logits, -1)) * gen.response_mask
    ent = None
    if entropy == "grad":
        ent = entropy_from_logits(logits)
    elif entropy == "monitor":
        with torch.no_grad():
            ent = entropy_from_logits(logits)
    return logp, ent


def gathered(x: torch.Tensor, info) -> torch.Tensor:
    """All ranks' values of a 1-D tensor, in rank order (the tensor itself on one process)."""
    if not info.enabled:
        return x
    return torch.tensor(dist.all_gather_list(x.tolist(), info), dtype=x.dtype, device=x.device)


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then constant."""
    return base_lr * min(1.0, (step + 1) / warmup) if warmup > 0 else base_lr


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def sample_and_score(model, tok, prompts: list[str], sampling, score_fn, generator,
                     ref=None, k: int = 1) -> dict:
    """Sample k responses per prompt, score them; with `ref`, also the KL (k1 and k3, nats per
    sequence) of the samples to the reference. Returns {"reward", "kl_k1", "kl_k3", "length",
    "ended", means over samples, and "rows": [{prompt, response, reward, ended}]}."""
    model.eval()
    ids = [tok.encode(p) for p in prompts for _ in range(k)]
    gen = generate(model, ids, sampling, tok.eos_id, tok.pad_id, tok.bos_id, generator,
                   stop_early=not dist.is_sharded(model))
    scores = score_fn(gen, texts_of(tok, gen)).float().cpu()
    out = {"reward": float(scores.mean()), "length": float(gen.response_mask.sum(1).float().mean()),
           "ended": float(gen.ended.float().mean())}
    if ref is not None:
        ref_lp, _ = response_logprobs(ref, gen, sampling.temperature)
        for est in ("k1", "k3"):
            kl = R.kl_per_token(gen.logprobs, ref_lp, est, gen.response_mask).sum(1)
            out[f"kl_{est}"] = float(kl.mean())
    responses = texts_of(tok, gen, include_prompt=False)
    out["rows"] = [{"prompt": prompts[i // k], "response": r, "reward": float(s), "ended": bool(e)}
                   for i, (r, s, e) in enumerate(zip(responses, scores, gen.ended.tolist()))]
    return out


def write_samples(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- update


def policy_loss(cfg, model, gen, adv, old_logp, ref_logp, kl_coef, with_entropy):
    """The loss of one (mini)batch and its statistics: the algorithm's policy-gradient term,
    the KL term when the KL is placed in the loss, minus the entropy bonus."""
    entropy = "grad" if cfg.algo.entropy_coef else "monitor" if with_entropy else "none"
    with autocast(cfg.runtime, gen.tokens.device):  # the same precision as sampling
        logp, ent = response_logprobs(model, gen, cfg.sampling.temperature, entropy)
    mask = gen.response_mask
    stats = {}
    if cfg.algo.name == "ppo":
        loss, stats = L.ppo_clip_loss(logp, old_logp, adv, mask, cfg.algo.clip_eps)
    else:
        loss = L.reinforce_loss(logp, adv, mask)
    if cfg.kl.placement == "loss":
        loss = loss + kl_coef * L.kl_loss(logp, ref_logp, mask, cfg.kl.estimator)
    if ent is not None:
        stats["entropy"] = L.masked_mean(ent.detach(), mask)
        if entropy == "grad":
            loss = loss - cfg.algo.entropy_coef * L.entropy_bonus(ent, mask)
    return loss, stats


def rows_of(gen: Generation, idx: torch.Tensor) -> Generation:
    """A minibatch of a sampled batch (rows `idx`)."""
    return Generation(tokens=gen.tokens[idx], mask=gen.mask[idx], prompt_width=gen.prompt_width,
                      response_mask=gen.response_mask[idx], logprobs=gen.logprobs[idx],
                      ended=gen.ended[idx])


def update(cfg, model, opt, gen, adv, ref_logp, kl_coef, lr, step) -> dict:
    """(5) RLOO/REINFORCE: one gradient step on the whole batch. PPO: `ppo_epochs` passes of
    `minibatches` shuffled minibatches, one optimiser step each; pi_old is the sampling
    policy, whose log-probs `generate` returns (equal to a fresh pass to 1e-5), so no extra
    forward pass is spent on them. Gradients are clipped to `max_grad_norm`."""
    B = gen.tokens.shape[0]
    ppo = cfg.algo.name == "ppo"
    epochs, n_mb = (cfg.algo.ppo_epochs, cfg.algo.minibatches) if ppo else (1, 1)
    g = torch.Generator().manual_seed(cfg.runtime.seed + 104_729 * step)
    for group in opt.param_groups:
        group["lr"] = lr
    stats: dict[str, list] = {}
    for epoch in range(epochs):
        order = torch.randperm(B, generator=g) if ppo else torch.arange(B)
        for mb in order.chunk(n_mb):
            mb = mb.to(gen.tokens.device)
            loss, s = policy_loss(cfg, model, rows_of(gen, mb), adv[mb], gen.logprobs[mb],
                                  ref_logp[mb], kl_coef, with_entropy=epoch == 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.algo.max_grad_norm)
            opt.step()
            for key, v in {"loss": loss.detach(), "grad_norm": dist.full_tensor(norm),
                           **s}.items():
                stats.setdefault(key, []).append(float(v))
    return {key: sum(v) / len(v) for key, v in stats.items()}


# ----------------------------------------------------------------------------- the loop


@dataclass
class LoopState:
    """Everything besides weights, optimiser and RNGs that a resumed run needs."""

    step: int = 0
    """Steps done (the data position is step * prompts.batch_prompts global prompts)."""
    kl: R.KLController = field(default_factory=lambda: R.KLController(0.0))
    """The KL coefficient and its controller."""
    moments: R.RunningMoments = field(default_factory=R.RunningMoments)
    """Running reward statistics (reward.normalize=running)."""
    baseline: float = 0.0
    """REINFORCE running-mean baseline."""
    baseline_count: int = 0
    """Batches the baseline has seen."""

    @classmethod
    def from_meta(cls, meta: dict) -> LoopState:
        return cls(step=meta["step"], kl=R.KLController(**meta["kl"]),
                   moments=R.RunningMoments(**meta["moments"]), baseline=meta["baseline"],
                   baseline_count=meta["baseline_count"])


def prepare_scores(cfg: RewardConfig, raw, ended, st: LoopState, info) -> torch.Tensor:
    """(2) Raw scores (B,) -> the scores to optimise: normalised (statistics over all ranks;
    `st.moments` is updated in place for 'running'), clipped, minus the missing-EOS penalty."""
    scores = raw
    if cfg.normalize == "running":
        st.moments = R.update_moments(st.moments, gathered(raw, info))
        scores = R.normalize_scores(raw, st.moments)
    elif cfg.normalize == "batch":
        every = gathered(raw, info)
        scores = (raw - every.mean()) / (every.std(unbiased=False) + 1e-8)
    if cfg.clip > 0:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    return R.missing_eos_penalty(scores, ended, cfg.missing_eos_penalty)


def advantages(cfg: AlgoConfig, returns, st: LoopState, info) -> torch.Tensor:
    """(4) Sequence advantages (B,) of the algorithm (REINFORCE updates `st.baseline` after
    using it), optionally whitened over the global batch."""
    if cfg.name == "reinforce":
        adv = R.reinforce_advantages(returns, st.baseline)
        st.baseline, st.baseline_count = R.update_baseline(
            st.baseline, st.baseline_count, gathered(returns, info), cfg.baseline_momentum)
    elif cfg.name == "ppo":
        adv = R.ppo_advantages(returns, cfg.k)
    else:
        adv = R.rloo_advantages(returns, cfg.k)
    if cfg.whiten_advantages:
        every = gathered(adv, info)
        adv = (adv - every.mean()) / (every.std(unbiased=False) + 1e-8)
    return adv


def train(cfg: PolicyTrainConfig, score_fn=None) -> dict:
    """Fine-tune `cfg.policy`; returns a summary (see the end). `score_fn(gen, texts) -> (B,)`
    replaces the configured reward (tests, custom rewards)."""
    info = dist.init(cfg.runtime.device)
    setup(cfg.runtime)
    device = info.device
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    policy, tok = load_model(cfg.policy)
    ref, _ = load_model(cfg.reference or cfg.policy)
    policy.to(device).train()
    ref.to(device).eval().requires_grad_(False)
    model = dist.wrap(policy, info, cfg.runtime.parallel)  # FSDP shards `policy` in place
    ref = dist.wrap(ref, info, cfg.runtime.parallel, trainable=False)
    sharded = dist.is_sharded(policy)  # forward passes are collective: ranks in lock-step
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.algo.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.algo.weight_decay)
    score_fn = score_fn or make_score_fn(cfg.reward, tok, device)
    train_prompts, eval_prompts = split_prompts(
        load_prompts(cfg.prompts.path or None, seed=cfg.runtime.seed), cfg.prompts.hold_out_every)
    prompt_ids = [tok.encode(p) for p in train_prompts]
    k, Bp = cfg.algo.k, cfg.prompts.batch_prompts
    if Bp % info.world_size:
        raise ValueError(f"prompts.batch_prompts={Bp} does not divide over {info.world_size} "
                         "processes")

    st = LoopState(kl=R.KLController(cfg.kl.coef, cfg.kl.target or None, cfg.kl.k_beta))
    log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    if cfg.resume and (out / "state" / "state.json").is_file():
        st = LoopState.from_meta(load_state(out / "state", {"policy": policy}, {"policy": opt})[0])
    if info.is_main:  # drop rows after the last checkpoint (all of them on a fresh start)
        log.truncate_after(st.step)
    eval_n = min(cfg.prompts.eval_prompts, len(eval_prompts))
    eval_p = eval_prompts[:eval_n]

    def evaluate(name: str) -> dict:
        g = step_generator(cfg.runtime.seed, -1, 0, device)  # the same draws every time
        res = sample_and_score(policy, tok, eval_p, cfg.sampling, score_fn, g, ref=ref,
                               k=cfg.prompts.eval_samples)
        if info.is_main:
            write_samples(out / "samples" / f"eval_{name}.jsonl", res.pop("rows"))
        return {kk: v for kk, v in res.items() if kk != "rows"}

    fresh = st.step == 0  # a resumed run keeps the eval_start of its first start
    summary: dict = {"eval_start": evaluate("start") if eval_n and fresh else None}
    first = last = None
    for step in range(st.step, cfg.steps):
        t0 = time.perf_counter()
        # (1) sample k responses per prompt of this rank's shard of the global batch
        local = dist.shard(global_batch(len(prompt_ids), step, Bp, cfg.runtime.seed), info)
        ids = [prompt_ids[i] for i in local for _ in range(k)]  # groups of k contiguous
        policy.eval()
        with autocast(cfg.runtime, device):  # bf16 where runtime.precision says so
            gen = generate(policy, ids, cfg.sampling, tok.eos_id, tok.pad_id, tok.bos_id,
                           step_generator(cfg.runtime.seed, step, info.rank, device),
                           stop_early=not sharded)
        policy.train()
        t1 = time.perf_counter()

        # (2) score; optional normalisation, clipping, missing-EOS penalty
        texts = texts_of(tok, gen)
        raw = score_fn(gen, texts).float().to(device)  # (B,)
        scores = prepare_scores(cfg.reward, raw, gen.ended, st, info)  # (B,)
        t2 = time.perf_counter()

        # (3) per-token KL to the reference, in the reward (default) or later in the loss
        with torch.no_grad(), autocast(cfg.runtime, device):
            ref_logp, _ = response_logprobs(ref, gen, cfg.sampling.temperature)  # (B, N)
        kl_tok = R.kl_per_token(gen.logprobs, ref_logp, cfg.kl.estimator, gen.response_mask)
        beta_in_reward = st.kl.coef if cfg.kl.placement == "reward" else 0.0
        rewards = R.shape_rewards(scores, kl_tok, gen.response_mask, beta_in_reward)  # (B, N)
        returns = R.sequence_returns(rewards)  # (B,)

        # (4) advantages
        adv = advantages(cfg.algo, returns, st, info)  # (B,)
        t3 = time.perf_counter()

        # (5) update
        lr = lr_at(step, cfg.algo.lr, cfg.algo.warmup_steps)
        upd = update(cfg, model, opt, gen, adv, ref_logp, st.kl.coef, lr, step)
        t4 = time.perf_counter()

        # (6) log (means over all ranks), adapt the KL coefficient, samples, state
        kl_seq = kl_tok.sum(1)  # (B,) raw KL per sequence
        m = {"reward": raw.mean(), "reward_std": raw.std(unbiased=False),
             "score_shaped": returns.mean(), "kl": kl_seq.mean(),
             "kl_k1": R.kl_per_token(gen.logprobs, ref_logp, "k1", gen.response_mask).sum(1).mean(),
             "kl_penalty": st.kl.coef * kl_seq.mean(),
             "length": gen.response_mask.sum(1).float().mean(), "ended": gen.ended.float().mean(),
             "adv_std": adv.std(unbiased=False), **upd}
        m = {kk: float(dist.all_reduce_mean(torch.as_tensor(v, dtype=torch.float32), info))
             for kk, v in m.items()}
        log.write(step=step + 1, lr=lr, kl_coef=st.kl.coef, clip_frac=m.pop("clip_frac", 0.0),
                  s_sample=t1 - t0, s_score=t2 - t1, s_ref=t3 - t2, s_update=t4 - t3,
                  s_per_step=time.perf_counter() - t0, **m)
        st.kl, st.step = R.adaptive_kl_update(st.kl, m["kl"]), step + 1
        first, last, done = first or m, m, step + 1
        if info.is_main and cfg.sample_every and (done % cfg.sample_every == 0 or done == 1):
            write_samples(out / "samples" / f"step_{done:06d}.jsonl",
                          [{"prompt": train_prompts[i], "response": r, "reward": float(s)}
                           for i, r, s in zip([j for j in local for _ in range(k)],
                                              texts_of(tok, gen, False), raw.tolist())])
        if (info.is_main or sharded) and (done == cfg.steps or (cfg.save_every and
                                                                done % cfg.save_every == 0)):
            save_state(out / "state", {"policy": policy}, {"policy": opt}, meta={
                **asdict(st), "global_prompts_seen": done * Bp, "world_size": info.world_size,
                "sharded": sharded},
                write=info.is_main)
        dist.barrier(info)

    if info.is_main or sharded:
        save_model(policy, tok, out / "policy", write=info.is_main)
    summary.update({
        "policy": str(out / "policy"), "steps": cfg.steps,
        "reward_first": first and first["reward"], "reward_last": last and last["reward"],
        "kl_last": last and last["kl"], "kl_coef": st.kl.coef,
        "eval_end": evaluate("end") if eval_n else None})
    dist.barrier(info)
    return summary


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf train-policy", description=__doc__.split("\n")[0],
                                epilog="keys:\n" + describe(PolicyTrainConfig),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML file of PolicyTrainConfig keys")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    a = p.parse_args(argv)
    config, over = a.config, list(a.overrides)
    if config and "=" in config:
        config, over = None, [config, *over]
    cfg = load_config(PolicyTrainConfig, config, over)
    summary = train(cfg)
    if dist.init(cfg.runtime.device).is_main:
        print(json.dumps(summary))
    dist.finish(dist.init(cfg.runtime.device))
    return 0
