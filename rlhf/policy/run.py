"""The policy stage around its loop: set-up (models, optimiser, prompts, the saved state),
where the reward comes from, evaluation at the start and end, and what each step keeps
(its metrics row, samples, the loop state a checkpoint holds, the early stop). The run folder,
checkpoints and signals are the shared harness's (`rlhf.harness.run`); the loop itself is
`rlhf.policy.train.train`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rlhf.config import ConfigError, require_fits
from rlhf.harness import distributed as dist
from rlhf.harness.optim import make_optimizer
from rlhf.harness.run import Handover, TrainingRun
from rlhf.harness.runtime import MetricsLog
from rlhf.lm.cards import set_metrics
from rlhf.lm.folders import load_model, save_adapter_folder, save_model
from rlhf.lm.generation import fit_prompts
from rlhf.lm.lora import checkpointed, has_lora, shared_reference, with_lora
from rlhf.lm.memory import apply_memory
from rlhf.lm.sampling import decode_rows
from rlhf.policy import advantages as R
from rlhf.policy import signals as S
from rlhf.policy.config import PolicyTrainConfig, RewardConfig
from rlhf.policy.evaluate import sample_and_score
from rlhf.policy.guard import Guard
from rlhf.prompts import load_prompts, split_prompts
from rlhf.raters.scorers import get_scorer
from rlhf.reward.model import load_reward_model, score_members, score_texts, score_tokens
from rlhf.reward.seqcls import ExternalRule


def step_generator(seed: int, step: int, rank: int, device) -> torch.Generator:
    """The sampling RNG of one (step, rank): stateless, so resuming needs no RNG file."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step * 7919 + rank)


def make_score_fn(cfg: RewardConfig, tok, device, loaded=None):
    """The reward of a sampled batch: fn(gen, texts) -> (B,) float tensor on `device`.
    `loaded`: the (reward model, tokenizer) of cfg.path when the caller has it already."""
    if cfg.kind == "scorer":
        scorer = get_scorer(cfg.scorer)

        def score(gen, texts):
            if not cfg.include_prompt:
                texts = decode_rows(tok, gen, include_prompt=False)
            return torch.tensor(scorer(texts), dtype=torch.float32, device=device)
        return score
    rm, rm_tok = loaded or load_reward_model(cfg.path, device)
    if not same_tokens(rm, rm_tok, tok):
        # another tokenizer or text rule (as TRL does): decode the policy's prompt and response
        # and score the texts with the reward model's own tokenizer, as it was trained
        def score(gen, texts):
            prompts = [tok.decode([t for t, m in zip(r, mk) if m]) for r, mk in zip(
                gen.tokens[:, :gen.prompt_width].tolist(),
                gen.mask[:, :gen.prompt_width].tolist())]
            responses = decode_rows(tok, gen, include_prompt=False)
            return score_texts(rm, rm_tok, prompts, responses).to(device)
        return score
    return lambda gen, texts: score_tokens(rm, gen.tokens, gen.mask).float()


def same_tokens(rm, rm_tok, tok) -> bool:
    """The policy's sampled ids are what the reward model reads: a causal reward model of the
    policy's vocabulary with the project's text rule (not an external model's,
    `rlhf.reward.seqcls.ExternalRule`, whose text is re-encoded by its own rule)."""
    return not (rm.is_encoder or rm_tok.vocab_size != tok.vocab_size
                or isinstance(rm_tok, ExternalRule))


def make_spread_fn(cfg: RewardConfig, tok, device, loaded=None):
    """The reward-model ensemble's spread on a sampled batch, fn(gen) -> (B,)
    (rlhf.policy.signals.member_spread), or None (a scorer, one member, another tokenizer)."""
    if cfg.kind != "model":
        return None
    rm, rm_tok = loaded or load_reward_model(cfg.path, device)
    if rm.n_members < 2 or not same_tokens(rm, rm_tok, tok):
        return None
    return lambda gen: S.member_spread(score_members(rm, gen.tokens, gen.mask).float())


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


# ----------------------------------------------------------------------------- set-up


@dataclass
class Run:
    """What `train` sets up before its first step, beside the run's bookkeeping (`tr`)."""

    tr: TrainingRun  # the run folder, log, checkpoints, signals (rlhf.harness.run)
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

    @property
    def info(self) -> dist.DistInfo:
        return self.tr.info

    @property
    def out(self) -> Path:
        return self.tr.out

    @property
    def log(self) -> MetricsLog:
        return self.tr.log

    @property
    def sharded(self) -> bool:  # forward passes are collective: ranks in lock-step
        return dist.is_sharded(self.policy)


def set_up(cfg: PolicyTrainConfig, tr: TrainingRun, score_fn, hand: Handover) -> Run:
    """Policy / reference / optimiser (or those `hand` holds), prompts, the saved state."""
    info = tr.info
    policy, tok = hand.start or load_model(cfg.policy, cfg.backend)
    policy = with_lora(policy, cfg.model.lora)  # LoRA: adapters on a frozen base, which is
    ref = (hand.reference or shared_reference(policy, cfg.reference)  # then the reference
           or load_model(cfg.reference or cfg.policy, cfg.backend)[0])
    apply_memory(policy, cfg.model)  # checkpointing; frozen weights in bf16 (rlhf.lm.memory)
    apply_memory(ref.requires_grad_(False), cfg.model)
    policy.to(info.device).train()
    ref.to(info.device).eval().requires_grad_(False)
    model = dist.wrap(policy, info, cfg.runtime.parallel)  # FSDP shards `policy` in place
    ref = dist.wrap(ref, info, cfg.runtime.parallel, trainable=False)
    opt = make_optimizer(policy, cfg.algo.lr, cfg.algo.weight_decay, cfg.algo.betas)
    prompts = load_prompts(cfg.prompts.path or None, seed=cfg.runtime.seed,
                           column=cfg.prompts.column or None, split=cfg.prompts.split)
    prompts = fit_prompts(prompts, tok, policy.args.max_seq_len, cfg.sampling)  # too long?
    train_p, eval_p = split_prompts(prompts, cfg.prompts.hold_out_every)
    require_fits(cfg.prompts.batch_prompts, len(train_p), "prompts.batch_prompts",
                 f"training prompts of {cfg.prompts.path or 'the default prompt set'}")
    if cfg.prompts.batch_prompts % info.world_size:
        raise ConfigError(f"prompts.batch_prompts={cfg.prompts.batch_prompts} does not divide "
                         f"over {info.world_size} processes")
    st = LoopState(kl=R.KLController(cfg.kl.coef, cfg.kl.target or None, cfg.kl.k_beta))
    meta = tr.resume({"policy": checkpointed(policy)}, {"policy": opt})  # LoRA: the adapters
    if meta:
        st = LoopState.from_meta(meta)
    eval_p = eval_p[:min(cfg.prompts.eval_prompts, len(eval_p))]
    rm = hand.reward or (load_reward_model(cfg.reward.path, info.device)
                         if cfg.reward.kind == "model" else None)
    return Run(tr, policy, model, ref, opt, tok,
               score_fn or make_score_fn(cfg.reward, tok, info.device, rm),
               make_spread_fn(cfg.reward, tok, info.device, rm), train_p, eval_p, st)


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


def write_step_samples(cfg: PolicyTrainConfig, run: Run, done: int, prompts, texts, raw
                       ) -> None:
    """(6) Rank 0's samples every `sample_every` steps (and the first)."""
    if run.info.is_main and cfg.sample_every and (done % cfg.sample_every == 0 or done == 1):
        write_samples(run.out / "samples" / f"step_{done:06d}.jsonl",
                      [{"prompt": p, "response": r, "reward": float(s)}
                       for p, r, s in zip(prompts, texts, raw.tolist())])


def state_meta(cfg: PolicyTrainConfig, st: LoopState) -> dict:
    """What a checkpoint keeps besides weights and moments: the loop state, the data position."""
    return {**asdict(st), "global_prompts_seen": st.step * cfg.prompts.batch_prompts}


def stop_early(cfg: PolicyTrainConfig, run: Run, guard: Guard, step: int) -> dict:
    """guard.stop fired at step `step`: keep the last good policy; the state is saved as done
    (a resumed run does not train on past the stop)."""
    kept, run.st.step = guard.restore(), cfg.steps
    run.tr.step = cfg.steps
    run.tr.save({**asdict(run.st), "stopped_at": step + 1, "kept_step": kept})
    run.log.write(step=step + 1, event="early_stop", kept_policy_of_step=kept)
    return {"stopped_at": step + 1, "kept_policy_of_step": kept}


def step_row(run: Run, step: int, lr: float, m: dict, sig: dict, warn: list,
             **seconds) -> dict:
    """(6) The step's metrics.jsonl row: figures, signals, warnings, timings."""
    return {"step": step + 1, "lr": lr, "kl_coef": run.st.kl.coef,
            "clip_frac": m.pop("clip_frac", 0.0), **seconds, **{**m, **sig}, "warnings": warn}


def shown(m: dict, sig: dict) -> dict:
    """The figures the progress bar shows."""
    return {"reward": m["reward"], "kl_tok": sig["kl_per_token"], "len": m["length"],
            **({"disagree": sig["disagreement"]} if "disagreement" in sig else {})}


def finish(cfg: PolicyTrainConfig, run: Run, guard: Guard, summary: dict,
           hand: Handover) -> dict:
    """(7) The final policy saved (FSDP: every rank gathers, rank 0 writes) and handed back;
    the summary: the run's first and last reward, KL, signals and the held-out evaluation."""
    run.tr.close()
    if run.tr.writes:
        save_model(run.policy, run.tok, run.out / "policy", write=run.info.is_main,
                   card=policy_card(cfg))  # merged
        if has_lora(run.policy):  # LoRA: the peft adapter folder beside
            summary["adapter"] = str(save_adapter_folder(run.policy, run.tok, run.out / "adapter",
                                                         cfg.policy, write=run.info.is_main))
    hand.trained = (run.policy, run.tok)
    (first, last), kl = run.log.first_last("reward"), run.log.first_last("kl")  # the run's
    summary.update({
        "policy": str(run.out / "policy"), "steps": cfg.steps,
        "reward_first": first, "reward_last": last, "kl_last": kl[1], "kl_coef": run.st.kl.coef,
        "signals_start": run.st.signals_base, "first_warning": guard.first,
        "signals_last": guard.last or last_signals(run.log),
        "eval_end": evaluate(cfg, run, "end")})
    set_metrics(run.out / "policy", {f"eval_{k}": v for k, v in (summary["eval_end"] or {})
                                     .items()}, write=run.tr.writes and run.info.is_main)
    dist.barrier(run.info)
    return summary


def policy_card(cfg: PolicyTrainConfig) -> dict:
    """The policy folder's model card fields (`rlhf.lm.cards`): what it started from, the
    prompts, the method and its main settings; the held-out figures follow (`set_metrics`)."""
    judge = cfg.reward.path if cfg.reward.kind == "model" else f"scorer {cfg.reward.scorer}"
    return {"title": "RL policy", "base_model": cfg.policy, "data": cfg.prompts.path or None,
            "method": f"RL policy ({cfg.algo.name}, k={cfg.algo.k}) on the reward of {judge}, "
                      f"KL-regularised to {cfg.reference or cfg.policy}",
            "settings": {"steps": cfg.steps, "algorithm": cfg.algo.name, "k": cfg.algo.k,
                         "lr": cfg.algo.lr, "kl_coef": cfg.kl.coef,
                         "kl_estimator": cfg.kl.estimator,
                         "kl_placement": cfg.kl.placement, "reward": judge,
                         "reward_normalize": cfg.reward.normalize,
                         "batch_prompts": cfg.prompts.batch_prompts,
                         "max_new_tokens": cfg.sampling.max_new_tokens}}


def last_signals(log: MetricsLog) -> dict | None:
    """The no-gold signals of the run's last logged step (a finished run, rerun, has not
    computed any itself)."""
    if not log.path.is_file():
        return None
    rows = [json.loads(x) for x in log.path.read_text().splitlines() if x.strip()]
    row = next((r for r in reversed(rows) if "kl_per_token" in r), None)
    return None if row is None else {k: row[k] for k in S.SIGNAL_KEYS if k in row}
