"""Typed configuration of `rlhf train-policy` (and of the loop's policy stage): where the
reward comes from, the KL penalty, the algorithm and its optimiser, the prompts. Each field's
docstring is its documentation (`rlhf train-policy --help` lists them); `check()` rejects
impossible values by key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, require
from rlhf.lm.config import LoraConfig, SamplingConfig
from rlhf.lm.memory import MemoryConfig
from rlhf.policy.algorithms import ALGORITHMS
from rlhf.raters.scorers import scorer_problem


@dataclass
class RewardConfig:
    kind: Literal["scorer", "model"] = "scorer"
    """'model': a reward-model folder (`path`); 'scorer': a named function of the text."""
    scorer: str = "vader"
    """kind=scorer: a name from rlhf.raters.scorers (vader, length) or your own scorer as a
    Python import path 'module:function' (a function from texts to scores)."""
    path: str = ""
    """kind=model: the reward-model folder (rlhf.reward.model.save_reward_model), or a
    transformers *ForSequenceClassification reward model of a native family (num_labels 1;
    read as transformers reads it, with its own tokenizer: rlhf.reward.seqcls)."""
    include_prompt: bool = True
    """kind=scorer: score prompt + response (the whole story); false: the response alone."""
    normalize: Literal["none", "batch", "running"] = "none"
    """Scores -> (score - mean) / std over this step's batch, or over every step so far."""
    clip: float = 0.0
    """Clip (normalised) scores to [-clip, clip]; 0 = off."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the score of a response with no EOS within max_new_tokens."""
    conservative_k: float = 0.0
    """kind=model with an ensemble: optimise the members' mean minus k times their std
    (Coste et al. 2023, uncertainty-weighted optimisation; rlhf.policy.signals); 0 = the mean."""

    def check(self) -> None:
        require(self.kind != "model" or bool(self.path), "path", "kind=model needs a path")
        problem = scorer_problem(self.scorer) if self.kind == "scorer" else None
        require(problem is None, "scorer", str(problem))
        require(self.clip >= 0, "clip", "must be >= 0")
        require(self.conservative_k >= 0, "conservative_k", "must be >= 0")


@dataclass
class KLConfig:
    estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token estimator of KL(policy || reference) (Schulman 2020)."""
    placement: Literal["reward", "loss"] = "reward"
    """'reward': -coef * KL on every token's reward; 'loss': coef * KL added to the loss."""
    coef: float = 0.05
    """KL coefficient beta (the initial one when `target` > 0)."""
    target: float = 0.0
    """> 0: adapt beta towards this KL (nats per response; Ziegler et al. 2019 eq. 2)."""
    k_beta: float = 0.1
    """Gain of the adaptive controller."""
    aggregate: Literal["sum", "mean"] = "sum"
    """The KL penalty of a response: 'sum' over its tokens (Ziegler et al. 2019; a shorter
    response pays less), or 'mean': the per-token mean (length-neutral; coef is then per
    token, so about max_new_tokens times larger for the same strength)."""

    def check(self) -> None:
        require(self.coef >= 0, "coef", "must be >= 0")
        require(self.target >= 0, "target", "must be >= 0 (0 = fixed coefficient)")
        require(self.k_beta > 0, "k_beta", "must be > 0")


@dataclass
class AlgoConfig:
    name: str = "rloo"
    """A name in rlhf.policy.algorithms.ALGORITHMS: 'rloo' (leave-one-out baseline),
    'reinforce' (running-mean baseline) or 'ppo' (clipped objective, group baseline, epochs
    of minibatches)."""
    k: int = 4
    """Samples per prompt (an RLOO/PPO group; >= 2 for those)."""
    lr: float = 3e-4
    """AdamW learning rate (rlhf.harness.optim)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many steps."""
    min_lr_ratio: float = 1.0
    """After warm-up, cosine decay to this share of lr at the last step (1 = constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay, on matrices only (rlhf.harness.optim's rule)."""
    max_grad_norm: float = 1.0
    """Clip the gradient's global norm to this (0 = off)."""
    whiten_advantages: bool = False
    """Advantages -> zero mean, unit std over the global batch."""
    baseline_momentum: float = 0.9
    """reinforce: EMA momentum of the running-mean baseline."""
    ppo_epochs: int = 2
    """ppo: passes over each sampled batch."""
    minibatches: int = 2
    """ppo: minibatches per pass (one optimiser step each)."""
    clip_eps: float = 0.2
    """ppo: clip range epsilon of the ratio."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (0 = monitored only)."""
    accumulation_steps: int = 1
    """Gradient accumulation: each optimiser step's batch (ppo: each minibatch) is run as this
    many micro-batches, forward and backward one at a time, their gradients summed; the update
    is that of the whole batch (to rounding), with the activation memory of one micro-batch."""

    def check(self) -> None:
        require(self.name in ALGORITHMS, "name",
                f"unknown algorithm {self.name!r}; known: {sorted(ALGORITHMS)}")
        require(self.k >= 1, "k", "must be >= 1")
        need = ALGORITHMS[self.name].min_k
        require(self.k >= need, "k", f"{self.name} needs k >= {need}")
        require(self.lr > 0, "lr", "must be > 0")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                "must be two numbers in [0, 1)")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        require(0 <= self.baseline_momentum < 1, "baseline_momentum", "must be in [0, 1)")
        require(self.ppo_epochs >= 1, "ppo_epochs", "must be >= 1")
        require(self.minibatches >= 1, "minibatches", "must be >= 1")
        require(0 < self.clip_eps < 1, "clip_eps", "must be in (0, 1)")
        require(self.accumulation_steps >= 1, "accumulation_steps", "must be >= 1")


@dataclass
class GuardConfig:
    """The no-gold over-optimisation rule of rlhf.policy.signals (its docstring has the rule)."""

    warn: bool = True
    """Check the rule every step; warnings go to metrics.jsonl, the output and the summary."""
    stop: bool = True
    """Early stopping: when the rule warns, stop training and keep the last good policy (the
    one that sampled `window` + 1 steps before the step that warned, as the smoothed signals
    of the steps between may already hold the collapse). On by measurement: it kept
    gold above its start in both collapsing 2 x 50-label runs tried (docs/policy-training.md) and
    changes nothing in a run that does not warn (the demo)."""
    window: int = 3
    """Steps the signals are averaged over before the rule is applied."""
    empty_max: float = 0.25
    """Warn when more than this share of responses is empty."""
    length_drop: float = 0.5
    """Warn when the mean length falls below this share of the first step's."""
    unterminated_rise: float = 0.5
    """Warn when the share without EOS rises by more than this over the first step's."""
    spread_rise: float = 3.0
    """Warn when the ensemble's disagreement exceeds this many times the first step's."""
    kl_token_max: float = 0.0
    """Warn when the KL per token exceeds this (nats; 0 = off)."""

    def check(self) -> None:
        require(self.window >= 1, "window", "must be >= 1")
        require(0 <= self.empty_max <= 1, "empty_max", "must be in [0, 1]")
        require(0 <= self.length_drop <= 1, "length_drop", "must be in [0, 1]")
        require(0 <= self.unterminated_rise <= 1, "unterminated_rise", "must be in [0, 1]")
        require(self.spread_rise >= 1, "spread_rise", "must be >= 1")
        require(self.kl_token_max >= 0, "kl_token_max", "must be >= 0 (0 = off)")


@dataclass
class PromptConfig:
    path: str = ""
    """Prompt file ('' = TinyStories story openings from ../shared; see rlhf.prompts)."""
    column: str = ""
    """Key of the prompt in JSON/JSONL/parquet/dataset rows ('' = the first of prompt,
    messages, text)."""
    split: str = "train"
    """Split of a `datasets` folder saved as a DatasetDict, or of a Hub dataset."""
    batch_prompts: int = 16
    """Prompts per step (global, over all processes); each gets `algo.k` samples."""
    hold_out_every: int = 10
    """Every n-th prompt is held out for evaluation, never trained on (0 = none)."""
    eval_prompts: int = 16
    """Held-out prompts sampled at the start and end of training (0 = no evaluation)."""
    eval_samples: int = 4
    """Samples per held-out prompt at evaluation (same seed at start and end)."""

    def check(self) -> None:
        require(self.batch_prompts >= 1, "batch_prompts", "must be >= 1")
        require(bool(self.split), "split", "must name a split")
        require(self.hold_out_every >= 0, "hold_out_every", "must be >= 0")
        require(self.eval_prompts >= 0, "eval_prompts", "must be >= 0")
        require(self.eval_samples >= 1, "eval_samples", "must be >= 1")


@dataclass
class PolicyModelConfig(MemoryConfig):
    """How the policy trains: LoRA, and the memory savers (rlhf.lm.memory) for the policy
    (trained) and its reference (frozen)."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (rank 0 = off; rlhf.lm.lora): the base frozen,
    the reference (reference '') the base with adapters off, one copy shared with the
    policy; saved as a peft adapter folder (adapter/) beside the merged model."""


@dataclass
class PolicyTrainConfig:
    """`rlhf train-policy`: policy-gradient fine-tuning with a KL penalty."""

    policy: str = "../shared/models/stories260K"
    """Initial policy (llama2.c or HF-style folder)."""
    reference: str = ""
    """Frozen KL reference policy ('' = the initial policy)."""
    backend: str = "native"
    """How HF folders are run: "native" (this project's models) or "transformers" (any
    AutoModelForCausalLM; slower; the optional extra `rlhf[transformers]`)."""
    out_dir: str = "runs/policy"
    """Run folder; an existing state/ in it is resumed (see `resume`)."""
    steps: int = 100
    """Total policy-gradient steps (a resumed run continues up to this)."""
    sample_every: int = 10
    """Write the step's samples to samples/ every n steps (0 = never)."""
    save_every: int = 25
    """Save the resumable state every n steps (and always at the end; 0 = end only)."""
    resume: bool = True
    """Continue from out_dir/state when it exists."""
    progress: bool = True
    """A progress bar with the step's figures on a terminal; plain lines otherwise."""
    model: PolicyModelConfig = field(default_factory=PolicyModelConfig)
    """LoRA and the memory savers: gradient checkpointing, the frozen weights (the reference,
    a LoRA base) in bf16."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Where the reward comes from and how it is normalised."""
    kl: KLConfig = field(default_factory=KLConfig)
    """The KL penalty to the reference."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Over-optimisation signals without gold: warnings and optional early stopping."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Algorithm and optimiser."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """Prompts and batch size."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How responses are sampled (temperature also scales the training log-probs)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.steps >= 0, "steps", "must be >= 0")
        require(self.backend in ("native", "transformers"), "backend",
                "must be native or transformers")
        require(self.sample_every >= 0, "sample_every", "must be >= 0")
        require(self.save_every >= 0, "save_every", "must be >= 0")
        require(not self.sampling.greedy, "sampling.greedy", "policy gradients need sampling")
        require(not ALGORITHMS[self.algo.name].reuses_batch or self.prompts.batch_prompts
                * self.algo.k >= self.algo.minibatches, "algo.minibatches",
                "more minibatches than samples")
        reused = ALGORITHMS[self.algo.name].reuses_batch
        rows = self.prompts.batch_prompts * self.algo.k // (self.algo.minibatches if reused else 1)
        require(self.algo.accumulation_steps <= rows, "algo.accumulation_steps",
                f"more micro-batches than the {rows} samples of an optimiser step")
