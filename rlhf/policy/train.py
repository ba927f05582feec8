"""`rlhf train-policy`: fine-tune a policy against a reward, with a KL penalty to a reference.

One visible loop, `train(cfg)`, each step:
  (1) sample k responses for each of the step's prompts (one batched, KV-cached `generate`);
  (2) score them (a reward model, or a named scorer such as VADER sentiment);
  (3) shape the reward with the per-token KL to the frozen reference (`policy.advantages`);
  (4) advantages of the algorithm (`policy.algorithms`: RLOO, REINFORCE, PPO);
  (5) update: one gradient step, or PPO epochs of minibatches;
  (6) log metrics, write samples, save a resumable state.

Data position and sampling seeds are functions of the step (and rank), so a resumed run, even
with another process count under `torchrun`, draws the same global prompt batches. Each rank
samples its `shard` of the global prompts; the k samples of a prompt stay on one rank;
batch statistics (normalisation, whitening, baselines, KL controller) use all ranks' values.

Run folder (`out_dir`): config.yaml, metrics.jsonl, samples/step_NNNNNN.jsonl (rank 0's
samples), samples/eval_start.jsonl and eval_end.jsonl (held-out prompts, fixed seed),
state/ (latest resumable state), policy/ (final policy, HF-style folder).
The configuration (`PolicyTrainConfig`) lives in `rlhf.policy.config`.
"""

from __future__ import annotations

import time

import torch

from rlhf.harness import distributed as dist
from rlhf.harness.folder import run_value
from rlhf.harness.optim import clip_gradients, lr_at, set_lr
from rlhf.harness.run import Handover, stage_cli, training_run
from rlhf.harness.runtime import autocast
from rlhf.lm.generation import Generation
from rlhf.lm.logprobs import response_logprobs
from rlhf.lm.sampling import Samples, decode_rows, sample
from rlhf.policy import advantages as R
from rlhf.policy import losses as L
from rlhf.policy import signals as S
from rlhf.policy.algorithms import ALGORITHMS
from rlhf.policy.config import PolicyTrainConfig, RewardConfig
from rlhf.policy.guard import Guard, batch_signals
from rlhf.policy.run import (
    LoopState,
    Run,
    evaluate,
    finish,
    set_up,
    shown,
    state_meta,
    step_generator,
    step_row,
    stop_early,
    write_step_samples,
)

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


def gathered(x: torch.Tensor, info) -> torch.Tensor:
    """All ranks' values of a 1-D tensor, in rank order (the tensor itself on one process)."""
    if not info.enabled:
        return x
    return torch.tensor(dist.all_gather_list(x.tolist(), info), dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------------------- steps


def sample_batch(cfg: PolicyTrainConfig, run: Run, step: int) -> Samples:
    """(1) k responses to each prompt of this rank's shard of step `step`'s global batch, in
    one batch (the policy in eval mode while it samples)."""
    local = dist.shard(global_batch(len(run.train_prompts), step, cfg.prompts.batch_prompts,
                                    cfg.runtime.seed), run.info)
    run.policy.eval()
    s = sample(run.policy, run.tok, [run.train_prompts[i] for i in local], cfg.sampling,
               step_generator(cfg.runtime.seed, step, run.info.rank, run.info.device),
               cfg.runtime, n=cfg.algo.k, batch_rows=0, stop_early=not run.sharded)
    run.policy.train()
    return s


def prepare_scores(cfg: RewardConfig, raw, ended, st: LoopState, info) -> torch.Tensor:
    """(2) Raw scores (B,) -> the scores to optimise: normalised (statistics over all ranks;
    `st.moments` is updated in place for 'running'), clipped, minus the missing-EOS penalty."""
    scores = raw
    if cfg.normalize == "running":
        st.moments = R.update_moments(st.moments, gathered(raw, info))
        scores = R.normalize_scores(raw, st.moments)
    elif cfg.normalize == "batch":
        scores = R.whiten(raw, over=gathered(raw, info))
    if cfg.clip > 0:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    return R.missing_eos_penalty(scores, ended, cfg.missing_eos_penalty)


def advantages(cfg, returns, st: LoopState, info) -> torch.Tensor:
    """(4) Sequence advantages (B,) of the algorithm (a running baseline is updated after
    being used), optionally whitened over the global batch."""
    algo = ALGORITHMS[cfg.name]
    adv = algo.advantages(returns, cfg.k, st.baseline)
    if algo.running_baseline:
        st.baseline, st.baseline_count = R.update_baseline(
            st.baseline, st.baseline_count, gathered(returns, info), cfg.baseline_momentum)
    if cfg.whiten_advantages:
        adv = R.whiten(adv, over=gathered(adv, info))
    return adv


def policy_loss(cfg, model, gen, adv, old_logp, ref_logp, kl_coef, with_entropy):
    """The loss of one (mini)batch and its statistics: the algorithm's policy-gradient term,
    the KL term when the KL is placed in the loss, minus the entropy bonus."""
    entropy = "grad" if cfg.algo.entropy_coef else "monitor" if with_entropy else "none"
    with autocast(cfg.runtime, gen.tokens.device):  # the same precision as sampling
        logp, ent = response_logprobs(model, gen, cfg.sampling.temperature, entropy)
    mask = gen.response_mask
    loss, stats = ALGORITHMS[cfg.algo.name].loss(logp, old_logp, adv, mask, cfg.algo.clip_eps)
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


def accumulate(cfg, model, gen, rows, adv, ref_logp, kl_coef, with_entropy):
    """The gradient of the loss of the batch `rows` (B_mb,), run as `algo.accumulation_steps`
    micro-batches: every loss here is a mean over rows of per-row terms over a fixed column
    count (`losses.seq_mean`), so the batch's loss is the sum of the micro-batches' losses
    weighted by their shares of the rows, and so is its gradient (accumulated by backward,
    synchronised over ranks on the last micro-batch only). Returns the batch's loss and its
    statistics, weighted the same."""
    parts = [p for p in rows.tensor_split(cfg.algo.accumulation_steps) if len(p)]
    total, stats = 0.0, {}
    for j, p in enumerate(parts):
        w = len(p) / len(rows)  # the micro-batch's share of the rows
        with dist.no_grad_sync(model, skip=j < len(parts) - 1):
            loss, s = policy_loss(cfg, model, rows_of(gen, p), adv[p], gen.logprobs[p],
                                  ref_logp[p], kl_coef, with_entropy)
            (loss * w).backward()
        total = total + w * loss.detach()
        for key, v in s.items():
            stats[key] = stats.get(key, 0.0) + w * v.detach()
    return total, stats


def update(cfg, model, opt, gen, adv, ref_logp, kl_coef, lr, step) -> dict:
    """(5) One gradient step on the whole batch, or (an algorithm that reuses its batch, PPO)
    `ppo_epochs` passes of `minibatches` shuffled minibatches, one optimiser step each; pi_old
    is the sampling policy, whose log-probs `generate` returns (equal to a fresh pass to 1e-5),
    so no extra forward pass is spent on them. Gradients are clipped to `max_grad_norm`; each
    step's gradient may be accumulated over micro-batches (`accumulate`)."""
    B = gen.tokens.shape[0]
    reuse = ALGORITHMS[cfg.algo.name].reuses_batch
    epochs, n_mb = (cfg.algo.ppo_epochs, cfg.algo.minibatches) if reuse else (1, 1)
    g = torch.Generator().manual_seed(cfg.runtime.seed + 104_729 * step)
    set_lr(opt, lr)
    stats: dict[str, list] = {}
    for epoch in range(epochs):
        order = torch.randperm(B, generator=g) if reuse else torch.arange(B)
        for mb in order.chunk(n_mb):
            opt.zero_grad(set_to_none=True)
            loss, s = accumulate(cfg, model, gen, mb.to(gen.tokens.device), adv, ref_logp,
                                 kl_coef, with_entropy=epoch == 0)
            norm = clip_gradients(model, cfg.algo.max_grad_norm)
            opt.step()
            for key, v in {"loss": loss.detach(), "grad_norm": dist.full_tensor(norm),
                           **s}.items():
                stats.setdefault(key, []).append(float(v))
    return {key: sum(v) / len(v) for key, v in stats.items()}


def step_metrics(gen, raw, returns, kl_tok, ref_logp, adv, kl_coef, upd, info) -> dict:
    """(6) The step's figures, means over all ranks."""
    kl_seq = kl_tok.sum(1)  # (B,) raw KL per sequence
    m = {"reward": raw.mean(), "reward_std": raw.std(unbiased=False),
         "score_shaped": returns.mean(), "kl": kl_seq.mean(),
         "kl_k1": R.kl_per_token(gen.logprobs, ref_logp, "k1", gen.response_mask).sum(1).mean(),
         "kl_penalty": kl_coef * kl_seq.mean(),
         "length": gen.response_mask.sum(1).float().mean(), "ended": gen.ended.float().mean(),
         "adv_std": adv.std(unbiased=False), **upd}
    return {k: float(dist.all_reduce_mean(torch.as_tensor(v, dtype=torch.float32), info))
            for k, v in m.items()}


# ----------------------------------------------------------------------------- the loop


def train(cfg: PolicyTrainConfig, score_fn=None, hand: Handover | None = None) -> dict:
    """Fine-tune `cfg.policy`; returns a summary (see the end). `score_fn(gen, texts) -> (B,)`
    replaces the configured reward (tests, custom rewards); `hand` holds the policy, reference
    and reward model when the caller has them (the loop), and receives the trained policy."""
    hand = hand or Handover()
    with training_run(cfg, "policy") as tr:  # processes, seeds, the run folder, signals
        run = set_up(cfg, tr, score_fn, hand)  # models, optimiser, prompts, resume
        info, st, device = run.info, run.st, run.info.device
        summary: dict = {"eval_start": run_value(run.out / "eval_start.json", st.step == 0,
                                                 lambda: evaluate(cfg, run, "start"),
                                                 info.is_main)}
        guard = Guard(cfg.guard, run.policy, st)
        for step in tr.steps(cfg.steps, cfg.save_every):
            t0 = time.perf_counter()
            # (1) sample k responses per prompt of this rank's shard of the global batch
            s = sample_batch(cfg, run, step)
            gen = s.batches[0]  # (B = prompts x k) rows, each prompt's k samples contiguous
            t1 = time.perf_counter()
            # (2) score (conservative: minus k x the ensemble's spread); normalise, clip, penalise
            raw = run.score_fn(gen, decode_rows(run.tok, gen)).float().to(device)  # (B,)
            spread = run.spread_fn(gen).to(device) if run.spread_fn else None  # (B,)
            raw = S.conservative_reward(raw, spread, cfg.reward.conservative_k)  # (B,)
            scores = prepare_scores(cfg.reward, raw, gen.ended, st, info)  # (B,)
            t2 = time.perf_counter()
            # (3) per-token KL to the reference, in the reward (default) or later in the loss
            with torch.no_grad(), autocast(cfg.runtime, device):
                ref_logp, _ = response_logprobs(run.ref, gen, cfg.sampling.temperature)  # (B, N)
            kl_tok = R.kl_per_token(gen.logprobs, ref_logp, cfg.kl.estimator, gen.response_mask)
            beta_in_reward = st.kl.coef if cfg.kl.placement == "reward" else 0.0
            rewards = R.shape_rewards(scores, S.kl_to_penalise(kl_tok, gen.response_mask,
                                                               cfg.kl.aggregate),
                                      gen.response_mask, beta_in_reward)  # (B, N)
            returns = R.sequence_returns(rewards)  # (B,)
            # (4) advantages
            adv = advantages(cfg.algo, returns, st, info)  # (B,)
            sig = batch_signals(gen, kl_tok, spread, info)
            if (warn := guard.check(step, sig, tr.bar)) and cfg.guard.stop:  # before the update
                summary.update(stop_early(cfg, run, guard, step))
                break
            t3 = time.perf_counter()
            # (5) update
            lr = lr_at(step, cfg.steps, cfg.algo.warmup_steps, cfg.algo.lr, cfg.algo.min_lr_ratio)
            upd = update(cfg, run.model, run.opt, gen, adv, ref_logp, st.kl.coef, lr, step)
            t4 = time.perf_counter()
            # (6) log, adapt the KL coefficient, samples, state
            m = step_metrics(gen, raw, returns, kl_tok, ref_logp, adv, st.kl.coef, upd, info)
            row = step_row(run, step, lr, m, sig, warn, s_sample=t1 - t0, s_score=t2 - t1,
                           s_ref=t3 - t2, s_update=t4 - t3, s_per_step=time.perf_counter() - t0)
            st.kl, st.step = R.adaptive_kl_update(st.kl, m["kl"]), step + 1
            write_step_samples(cfg, run, step + 1, s.prompts, decode_rows(run.tok, gen, False),
                               raw)
            tr.end_step(row, meta=state_meta(cfg, st), show=shown(m, sig))
        # (7) the final policy and the summary
        return finish(cfg, run, guard, summary, hand)


def cli(argv: list[str]) -> int:
    return stage_cli(PolicyTrainConfig, train, "rlhf train-policy", __doc__.split("\n")[0], argv)
