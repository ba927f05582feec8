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

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rlhf import distributed as dist
from rlhf.config import ConfigError, parse_cli, require_fits
from rlhf.feedback.scorers import get_scorer
from rlhf.lm.folders import load_model, save_model
from rlhf.lm.generation import Generation
from rlhf.lm.logprobs import response_logprobs
from rlhf.lm.sampling import decode_rows, sample
from rlhf.optim import clip_gradients, lr_at, make_optimizer, set_lr
from rlhf.policy import advantages as R
from rlhf.policy import losses as L
from rlhf.policy import signals as S
from rlhf.policy.algorithms import ALGORITHMS
from rlhf.policy.config import PolicyTrainConfig, RewardConfig
from rlhf.policy.evaluate import sample_and_score
from rlhf.policy.guard import Guard, batch_signals
from rlhf.progress import Progress
from rlhf.prompts import load_prompts, split_prompts
from rlhf.reward.model import load_reward_model, score_members, score_texts, score_tokens
from rlhf.runfolder import (
    Interrupted,
    holds_run_folder,
    run_value,
    save_run_config,
    stop_signal,
)
from rlhf.runtime import MetricsLog, autocast, setup
from rlhf.state import has_state, load_state, require_finite, save_state

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


def make_score_fn(cfg: RewardConfig, tok, device):
    """The reward of a sampled batch: fn(gen, texts) -> (B,) float tensor on `device`."""
    if cfg.kind == "scorer":
        scorer = get_scorer(cfg.scorer)

        def score(gen, texts):
            if not cfg.include_prompt:
                texts = decode_rows(tok, gen, include_prompt=False)
            return torch.tensor(scorer(texts), dtype=torch.float32, device=device)
        return score
    rm, rm_tok = load_reward_model(cfg.path, device)
    if rm.is_encoder or rm_tok.vocab_size != tok.vocab_size:
        # another tokenizer (as TRL does): decode the policy's prompt and response and score
        # the texts with the reward model's own tokenizer, as (prompt, response) as it trained
        def score(gen, texts):
            prompts = [tok.decode([t for t, m in zip(r, mk) if m]) for r, mk in zip(
                gen.tokens[:, :gen.prompt_width].tolist(),
                gen.mask[:, :gen.prompt_width].tolist())]
            responses = decode_rows(tok, gen, include_prompt=False)
            return score_texts(rm, rm_tok, prompts, responses).to(device)
        return score
    return lambda gen, texts: score_tokens(rm, gen.tokens, gen.mask).float()


def make_spread_fn(cfg: RewardConfig, tok, device):
    """The reward-model ensemble's spread on a sampled batch, fn(gen) -> (B,)
    (rlhf.policy.signals.member_spread), or None (a scorer, one member, another tokenizer)."""
    if cfg.kind != "model":
        return None
    rm, rm_tok = load_reward_model(cfg.path, device)
    if rm.n_members < 2 or rm_tok.vocab_size != tok.vocab_size:
        return None
    return lambda gen: S.member_spread(score_members(rm, gen.tokens, gen.mask).float())


def gathered(x: torch.Tensor, info) -> torch.Tensor:
    """All ranks' values of a 1-D tensor, in rank order (the tensor itself on one process)."""
    if not info.enabled:
        return x
    return torch.tensor(dist.all_gather_list(x.tolist(), info), dtype=x.dtype, device=x.device)


def write_samples(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- state


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
    signals_base: dict = field(default_factory=dict)
    """The first step's over-optimisation signals: the guard rule's baseline."""

    @classmethod
    def from_meta(cls, meta: dict) -> LoopState:
        return cls(step=meta["step"], kl=R.KLController(**meta["kl"]),
                   moments=R.RunningMoments(**meta["moments"]), baseline=meta["baseline"],
                   baseline_count=meta["baseline_count"],
                   signals_base=meta.get("signals_base", {}))


# ----------------------------------------------------------------------------- steps


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


def update(cfg, model, opt, gen, adv, ref_logp, kl_coef, lr, step) -> dict:
    """(5) One gradient step on the whole batch, or (an algorithm that reuses its batch, PPO)
    `ppo_epochs` passes of `minibatches` shuffled minibatches, one optimiser step each; pi_old
    is the sampling policy, whose log-probs `generate` returns (equal to a fresh pass to 1e-5),
    so no extra forward pass is spent on them. Gradients are clipped to `max_grad_norm`."""
    B = gen.tokens.shape[0]
    reuse = ALGORITHMS[cfg.algo.name].reuses_batch
    epochs, n_mb = (cfg.algo.ppo_epochs, cfg.algo.minibatches) if reuse else (1, 1)
    g = torch.Generator().manual_seed(cfg.runtime.seed + 104_729 * step)
    set_lr(opt, lr)
    stats: dict[str, list] = {}
    for epoch in range(epochs):
        order = torch.randperm(B, generator=g) if reuse else torch.arange(B)
        for mb in order.chunk(n_mb):
            mb = mb.to(gen.tokens.device)
            loss, s = policy_loss(cfg, model, rows_of(gen, mb), adv[mb], gen.logprobs[mb],
                                  ref_logp[mb], kl_coef, with_entropy=epoch == 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = clip_gradients(model, cfg.algo.max_grad_norm)
            opt.step()
            for key, v in {"loss": loss.detach(), "grad_norm": dist.full_tensor(norm),
                           **s}.items():
                stats.setdefault(key, []).append(float(v))
    return {key: sum(v) / len(v) for key, v in stats.items()}


# ----------------------------------------------------------------------------- set-up


@dataclass
class Run:
    """What `train` sets up before its first step."""

    info: dist.DistInfo
    out: Path
    policy: torch.nn.Module  # the policy itself (FSDP: sharded in place)
    model: torch.nn.Module  # what the update calls: the policy, or its DDP wrapper
    ref: torch.nn.Module
    opt: torch.optim.Optimizer
    tok: object
    score_fn: object
    spread_fn: object  # the ensemble's spread on a batch, or None
    train_prompts: list[str]
    eval_prompts: list[str]
    st: LoopState
    log: MetricsLog

    @property
    def sharded(self) -> bool:  # forward passes are collective: ranks in lock-step
        return dist.is_sharded(self.policy)


def set_up(cfg: PolicyTrainConfig, score_fn) -> Run:
    """Processes, run folder, policy / reference / optimiser, prompts, and the saved state."""
    info = dist.init(cfg.runtime.device)
    setup(cfg.runtime)
    out = Path(cfg.out_dir)
    if info.is_main:
        save_run_config(cfg, out, resuming=cfg.resume and has_state(out / "state"))
    policy, tok = load_model(cfg.policy, cfg.backend)
    ref, _ = load_model(cfg.reference or cfg.policy, cfg.backend)
    policy.to(info.device).train()
    ref.to(info.device).eval().requires_grad_(False)
    model = dist.wrap(policy, info, cfg.runtime.parallel)  # FSDP shards `policy` in place
    ref = dist.wrap(ref, info, cfg.runtime.parallel, trainable=False)
    opt = make_optimizer(policy, cfg.algo.lr, cfg.algo.weight_decay, cfg.algo.betas)
    train_p, eval_p = split_prompts(load_prompts(cfg.prompts.path or None,
                                                 seed=cfg.runtime.seed),
                                    cfg.prompts.hold_out_every)
    require_fits(cfg.prompts.batch_prompts, len(train_p), "prompts.batch_prompts",
                 f"training prompts of {cfg.prompts.path or 'the default prompt set'}")
    if cfg.prompts.batch_prompts % info.world_size:
        raise ConfigError(f"prompts.batch_prompts={cfg.prompts.batch_prompts} does not divide "
                         f"over {info.world_size} processes")
    st = LoopState(kl=R.KLController(cfg.kl.coef, cfg.kl.target or None, cfg.kl.k_beta))
    log = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    if cfg.resume and has_state(out / "state"):
        st = LoopState.from_meta(load_state(out / "state", {"policy": policy}, {"policy": opt})[0])
    if info.is_main:  # drop rows after the last checkpoint (all of them on a fresh start)
        log.truncate_after(st.step)
    eval_p = eval_p[:min(cfg.prompts.eval_prompts, len(eval_p))]
    return Run(info, out, policy, model, ref, opt, tok,
               score_fn or make_score_fn(cfg.reward, tok, info.device),
               make_spread_fn(cfg.reward, tok, info.device), train_p, eval_p, st, log)


def evaluate(cfg: PolicyTrainConfig, run: Run, name: str) -> dict | None:
    """Held-out prompts, the same draws every time; samples to samples/eval_NAME.jsonl."""
    if not run.eval_prompts:
        return None
    g = step_generator(cfg.runtime.seed, -1, 0, run.info.device)
    res = sample_and_score(run.policy, run.tok, run.eval_prompts, cfg.sampling, run.score_fn,
                           g, ref=run.ref, k=cfg.prompts.eval_samples, runtime=cfg.runtime)
    rows = res.pop("rows")
    if run.info.is_main:
        write_samples(run.out / "samples" / f"eval_{name}.jsonl", rows)
    return res


def bookkeeping(cfg: PolicyTrainConfig, run: Run, step: int, prompts, texts, raw,
                sig: int = 0) -> None:
    """(6) Samples every `sample_every` steps (and the first), the state every `save_every`
    steps, at the end and when signal `sig` asks the run to stop (then `Interrupted` is raised
    once it is saved). FSDP: every rank gathers, rank 0 writes."""
    done, info = step + 1, run.info
    if info.is_main and cfg.sample_every and (done % cfg.sample_every == 0 or done == 1):
        write_samples(run.out / "samples" / f"step_{done:06d}.jsonl",
                      [{"prompt": p, "response": r, "reward": float(s)}
                       for p, r, s in zip(prompts, texts, raw.tolist())])
    if (info.is_main or run.sharded) and (sig or done == cfg.steps or (
            cfg.save_every and done % cfg.save_every == 0)):
        save_state(run.out / "state", {"policy": run.policy}, {"policy": run.opt}, meta={
            **asdict(run.st), "global_prompts_seen": done * cfg.prompts.batch_prompts,
            "world_size": info.world_size, "sharded": run.sharded}, write=info.is_main)
    dist.barrier(info)
    if sig and done < cfg.steps:
        raise Interrupted(sig, f"after step {done} of {run.out}")


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


def stop_early(cfg: PolicyTrainConfig, run: Run, guard: Guard, step: int) -> dict:
    """guard.stop fired at step `step`: keep the last good policy; the state is saved as done
    (a resumed run does not train on past the stop)."""
    kept, run.st.step = guard.restore(), cfg.steps
    if run.info.is_main or run.sharded:
        save_state(run.out / "state", {"policy": run.policy}, {"policy": run.opt}, meta={
            **asdict(run.st), "stopped_at": step + 1, "kept_step": kept,
            "world_size": run.info.world_size, "sharded": run.sharded},
            write=run.info.is_main)
    run.log.write(step=step + 1, event="early_stop", kept_policy_of_step=kept)
    return {"stopped_at": step + 1, "kept_policy_of_step": kept}


def log_step(run: Run, bar: Progress, step: int, lr: float, m: dict, sig: dict, warn: list,
             **seconds) -> None:
    """(6) The step's metrics.jsonl row (figures, signals, warnings, timings); the bar."""
    run.log.write(step=step + 1, lr=lr, kl_coef=run.st.kl.coef,
                  clip_frac=m.pop("clip_frac", 0.0), **seconds, **{**m, **sig}, warnings=warn)
    bar.update(reward=m["reward"], kl_tok=sig["kl_per_token"], len=m["length"],
               **({"disagree": sig["disagreement"]} if "disagreement" in sig else {}))


# ----------------------------------------------------------------------------- the loop


@holds_run_folder  # one run per folder (a lock), SIGINT/SIGTERM caught: see rlhf.runfolder
def train(cfg: PolicyTrainConfig, score_fn=None) -> dict:
    """Fine-tune `cfg.policy`; returns a summary (see the end). `score_fn(gen, texts) -> (B,)`
    replaces the configured reward (tests, custom rewards)."""
    run = set_up(cfg, score_fn)
    info, st, k, device = run.info, run.st, cfg.algo.k, run.info.device
    summary: dict = {"eval_start": run_value(run.out / "eval_start.json", st.step == 0,
                                             lambda: evaluate(cfg, run, "start"), info.is_main)}
    guard = Guard(cfg.guard, run.policy, st)
    bar = Progress("policy", cfg.steps, st.step, enabled=info.is_main and cfg.progress)
    for step in range(st.step, cfg.steps):
        t0 = time.perf_counter()
        # (1) sample k responses per prompt of this rank's shard of the global batch
        local = dist.shard(global_batch(len(run.train_prompts), step, cfg.prompts.batch_prompts,
                                        cfg.runtime.seed), info)
        run.policy.eval()
        s = sample(run.policy, run.tok, [run.train_prompts[i] for i in local], cfg.sampling,
                   step_generator(cfg.runtime.seed, step, info.rank, device), cfg.runtime,
                   n=k, batch_rows=0, stop_early=not run.sharded)
        gen = s.batches[0]  # (B = prompts x k) rows, each prompt's k samples contiguous
        run.policy.train()
        t1 = time.perf_counter()
        # (2) score; optional normalisation, clipping, missing-EOS penalty
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
        if (warn := guard.check(step, sig, bar)) and cfg.guard.stop:  # before the update
            summary.update(stop_early(cfg, run, guard, step))
            break
        t3 = time.perf_counter()
        # (5) update
        lr = lr_at(step, cfg.steps, cfg.algo.warmup_steps, cfg.algo.lr, cfg.algo.min_lr_ratio)
        upd = update(cfg, run.model, run.opt, gen, adv, ref_logp, st.kl.coef, lr, step)
        t4 = time.perf_counter()
        # (6) log, adapt the KL coefficient, samples, state
        m = step_metrics(gen, raw, returns, kl_tok, ref_logp, adv, st.kl.coef, upd, info)
        log_step(run, bar, step, lr, m, sig, warn, s_sample=t1 - t0, s_score=t2 - t1,
                 s_ref=t3 - t2, s_update=t4 - t3, s_per_step=time.perf_counter() - t0)
        require_finite(m["loss"], step + 1, "loss", run.out)
        st.kl, st.step = R.adaptive_kl_update(st.kl, m["kl"]), step + 1
        bookkeeping(cfg, run, step, s.prompts, decode_rows(run.tok, gen, False), raw,
                    stop_signal(info))
    # (7) the final policy and the summary
    bar.close()
    if info.is_main or run.sharded:
        save_model(run.policy, run.tok, run.out / "policy", write=info.is_main)
    (first, last), kl = run.log.first_last("reward"), run.log.first_last("kl")  # the run's
    summary.update({
        "policy": str(run.out / "policy"), "steps": cfg.steps,
        "reward_first": first, "reward_last": last, "kl_last": kl[1], "kl_coef": st.kl.coef,
        "signals_start": st.signals_base, "first_warning": guard.first,
        "signals_last": guard.last, "eval_end": evaluate(cfg, run, "end")})
    dist.barrier(info)
    return summary


def cli(argv: list[str]) -> int:
    cfg = parse_cli(PolicyTrainConfig, "rlhf train-policy", __doc__.split("\n")[0], argv)
    summary = train(cfg)
    info = dist.init(cfg.runtime.device)
    if info.is_main:
        print(json.dumps(summary))
    dist.finish(info)
    return 0
