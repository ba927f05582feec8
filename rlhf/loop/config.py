"""Typed configuration of `rlhf loop`: the rounds, who rates, the per-round evaluation, and the
reward-model and policy stages' own configs nested as `reward` and `rl`. Each field's docstring
is its documentation (`rlhf loop --help` lists them); `check()` rejects impossible values by
key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import RuntimeConfig, get_key, require
from rlhf.dpo.config import DPOTrainConfig
from rlhf.feedback.config import MAX_RANK_K, AskMix, ScaleConfig
from rlhf.kto.config import KTODataConfig, KTOTrainConfig
from rlhf.lm.config import SamplingConfig
from rlhf.policy.config import PolicyTrainConfig
from rlhf.raters.scorers import is_rater_class, resolve, scorer_problem
from rlhf.reward.config import RewardTrainConfig
from rlhf.sft.config import SFTConfig

LOOP_SETS = {
    "reward": {
        "out_dir": "the round's reward_model/ folder",
        "data.paths": "the round's snapshot of the comparison store",
        "model.init": "reward_init: the previous round's reward model, or the policy",
        "runtime": "the loop's runtime section",
    },
    "rl": {
        "policy": "the previous round's policy",
        "reference": "the starting policy (the KL anchor of every round)",
        "out_dir": "the round's policy_train/ folder",
        "reward.kind": "model: this round's reward model",
        "reward.path": "this round's reward model",
        "prompts.path": "the run's training prompts",
        "prompts.hold_out_every": "0: the loop holds out its own evaluation prompts",
        "prompts.eval_prompts": "0: the loop evaluates each round itself",
        "sampling": "the loop's sampling section",
        "runtime": "the loop's runtime section",
    },
    "dpo": {
        "out_dir": "the round's policy_train/ folder",
        "data.paths": "the round's own comparisons (pairs from the current policy)",
        "model.init": "the previous round's policy",
        "model.reference": "dpo_reference: the starting or the previous round's policy",
        "progress": "off: the loop prints its own progress",
        "runtime": "the loop's runtime section",
    },
    "sft": {
        "out_dir": "the round's sft/ folder",
        "data.paths": "the round's corrections (corrections_used.jsonl)",
        "model.init": "the previous round's policy",
        "progress": "off: the loop prints its own progress",
        "runtime": "the loop's runtime section",
    },
    "kto": {
        "out_dir": "the round's policy_train/ folder",
        "data.paths": "the round's answers (comparisons_used.jsonl)",
        "model.init": "the previous round's policy (or the round's SFT policy)",
        "model.reference": "the starting policy",
        "progress": "off: the loop prints its own progress",
        "runtime": "the loop's runtime section",
    },
}
"""The keys of the nested stage configs that the loop sets itself each round, and why; setting
one of them in a loop config is refused (it would be silently replaced)."""


NEVER_RETIRED = 1 << 30
"""`LiveConfig.retire_after` with stale=downweight: a staleness no run reaches."""


def loop_kto() -> KTOTrainConfig:
    """The loop's default KTO section: `data.paths` is the loop's to set (each round's)."""
    return KTOTrainConfig(data=KTODataConfig(paths=["set by the loop"]))


@dataclass
class RaterConfig:
    kind: Literal["simulated", "human", "web"] = "simulated"
    """'simulated': a named scorer with Bradley-Terry noise answers at once; 'human': the loop
    writes the queue, prints the `rlhf rate` command and waits (or exits) until it is rated
    (mode=async: one command for the whole run, which waits for new items);
    'web': the loop serves the queue (`rlhf serve`), prints one link per rater in `name`
    (comma-separated) and waits until every pair has an answer."""
    scorer: str = "vader"
    """Simulated rater: the scorer it prefers by ('vader' = the happier story, 'length'), or
    your own as a Python import path 'module:function' (texts -> scores) or 'module:Class'
    (a scorer class, or a rater class with rate_many; see rlhf.raters.scorers)."""
    temperature: float | None = None
    """Simulated rater's Bradley-Terry noise in scorer units; 0 = noiseless; null = the
    built-in scorer's default (vader 0.25, length 10). A plugged-in scorer must set it."""
    tie_band: float | None = None
    """Simulated rater: 'tie' when the scores differ by less than this (scorer units); null =
    the built-in scorer's default (vader 0.05, length 2). A plugged-in scorer must set it."""
    name: str = ""
    """Simulated: the name recorded with its answers (default sim-<scorer>-<seed>). Human: the
    name put in the printed `rlhf rate` command. Web: the raters, comma-separated."""
    port: int = 8765
    """Web: the port the rating page is served on (at 127.0.0.1)."""
    max_note_chars: int = 2000
    """Web: the longest note a rater may write (characters); a longer one is refused with a
    message, never cut."""
    poll_seconds: float = 0.0
    """Human rater: 0 = exit with status 'waiting for ratings' (re-run to resume);
    > 0 = wait, checking the store every this many seconds. Under torchrun prefer 0: the
    other processes wait in a collective, which times out (30 minutes by default)."""

    def check(self) -> None:
        require(self.temperature is None or self.temperature >= 0, "temperature", "must be >= 0")
        require(self.tie_band is None or self.tie_band >= 0, "tie_band", "must be >= 0")
        require(self.poll_seconds >= 0, "poll_seconds", "must be >= 0")
        require(self.max_note_chars >= 1, "max_note_chars", "must be >= 1")
        require(0 < self.port < 65536, "port", "must be in 1..65535")
        if self.kind != "simulated":
            return
        problem = scorer_problem(self.scorer, rater=True)
        require(problem is None, "scorer", str(problem))
        if ":" in self.scorer and not is_rater_class(resolve(self.scorer)):
            for key in ("temperature", "tie_band"):  # a plugged-in scorer has no defaults
                require(getattr(self, key) is not None, key,
                        f"scorer {self.scorer!r} has no default noise: set rater.{key} (in "
                        "the scorer's units; 0 = noiseless)")


@dataclass
class EvalConfig:
    n_prompts: int = 48
    """Held-out prompts (never used for pairs or policy training), the same every round."""
    samples_per_prompt: int = 2
    """Fresh samples per held-out prompt."""
    gold_scorer: str = "vader"
    """The known true scorer for the gold score ('' = none, e.g. real human raters): a
    built-in name or your own as 'module:function' (texts -> scores)."""
    seed: int = 1234
    """Sampling seed: the same every round, so rounds differ only by the policy."""

    def check(self) -> None:
        require(self.n_prompts >= 1, "n_prompts", "must be >= 1")
        problem = scorer_problem(self.gold_scorer) if self.gold_scorer else None
        require(problem is None, "gold_scorer", f"{problem} ('' = none)")
        require(self.samples_per_prompt >= 1, "samples_per_prompt", "must be >= 1")


@dataclass
class LiveConfig:
    """`mode: async`: rating and training overlap (`rlhf.loop.live`)."""

    ahead: int = 8
    """Items kept unanswered ahead of the raters: whenever fewer are left to rate (stale ones
    not counted), more are sampled from the newest policy."""
    max_staleness: int = 1
    """Items sampled from a policy more than this many versions (rounds) older than the
    newest are stale: retired or down-weighted, as `stale` says."""
    stale: Literal["retire", "downweight"] = "retire"
    """What happens to stale items. 'retire': no longer served (kept in the queue file, their
    answers in the store, trained on in full). 'downweight': still served (the newest first),
    and in each round's reward-model training an answer k versions beyond max_staleness
    counts with weight stale_weight**k (written into the round's snapshot as `meta.weight`;
    the store is untouched)."""
    stale_weight: float = 0.5
    """stale=downweight: the factor per version beyond max_staleness (0 < w <= 1; 1 = every
    answer counts in full)."""
    answers_per_round: int = 0
    """A round starts training when this many new answers have come in since the previous
    round's cut (0 = pairs_per_round); it trains on every answer so far."""
    max_wait_seconds: float = 0.0
    """... or when this many seconds have passed since the previous cut with at least one new
    answer (0 = wait for the count)."""
    poll_seconds: float = 0.25
    """How often the loop and the sampler look at the store for new answers (seconds)."""

    def retire_after(self) -> int:
        """The staleness beyond which items are no longer served (`servable`'s
        `max_staleness`): max_staleness, or (stale=downweight) never."""
        return self.max_staleness if self.stale == "retire" else NEVER_RETIRED

    def check(self) -> None:
        require(self.ahead >= 1, "ahead", "must be >= 1")
        require(self.max_staleness >= 0, "max_staleness", "must be >= 0")
        require(0 < self.stale_weight <= 1, "stale_weight", f"must be in (0, 1], got "
                f"{self.stale_weight}")
        require(self.answers_per_round >= 0, "answers_per_round", "must be >= 0 (0 = "
                "pairs_per_round)")
        require(self.max_wait_seconds >= 0, "max_wait_seconds", "must be >= 0")
        require(self.poll_seconds > 0, "poll_seconds", "must be > 0")


@dataclass
class LoopConfig:
    """`rlhf loop`: rounds of sample, rate, train reward, train policy, evaluate."""

    out_dir: str = "runs/loop"
    """The run folder (layout in the module docstring); re-running resumes it."""
    policy: str = "../shared/models/stories260K"
    """The starting policy (llama2.c or HF-style folder); also the KL reference."""
    prompts: str = ""
    """Prompt file ('' = TinyStories story openings from the shared sample)."""
    prompt_column: str = ""
    """Key of the prompt in JSON/JSONL/parquet/dataset rows ('' = the first of prompt,
    messages, text)."""
    prompt_split: str = "train"
    """Split of a `datasets` folder saved as a DatasetDict, or of a Hub dataset."""
    rounds: int = 3
    """Rounds of feedback after round 0 (the starting policy)."""
    pairs_per_round: int = 100
    """Items sampled and rated each round (pairs to compare, by default; `mix`)."""
    mix: AskMix = field(default_factory=AskMix)
    """What each round's items ask (weights of compare, rank, rate, correct; the counts are
    the weights' shares of pairs_per_round, rounded). Each kind goes to the stage that learns
    from it: corrections to a supervised step (`sft`) before the other training steps and, as
    corrected-over-original pairs, to the reward model / DPO with comparisons, rankings and
    ratings (`reward.data.kinds`, `dpo.data.kinds`); ratings to KTO with policy_method=kto.
    Default: every item compares two."""
    rank_k: int = 4
    """Responses sampled for each rank item (3 to 9)."""
    rate_k: int = 1
    """Responses sampled for each prompt asked to rate, each rated as its own item: 1 gives
    unpaired rows (KTO); 2 or more also gives the reward model / DPO pairs between the
    responses one rater rated differently."""
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    """The scale of rate items (thumbs by default)."""
    selection: Literal["random", "disagreement"] = "random"
    """Which pairs are rated: 'random', or the ones the reward-model ensemble disagrees on
    most among `oversample` times as many candidates (Christiano et al. 2017): from round 2
    on, by the previous round's ensemble (mode=async: by the newest round's, once one is
    trained; random before)."""
    oversample: int = 4
    """selection=disagreement: candidates per rated pair."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling of pairs, policy training and evaluation."""
    rater: RaterConfig = field(default_factory=RaterConfig)
    """Who rates the pairs."""
    mode: Literal["lockstep", "async"] = "lockstep"
    """'lockstep': each round samples its pairs, waits until they are rated, then trains
    (nobody rates while it trains). 'async' (rater.kind web or human): the rating page, or
    `rlhf rate` on the run's queue, stays up for the whole run on one growing queue, refilled
    from the newest policy, and a round trains on every answer so far once enough new ones
    came in (section `live`)."""
    live: LiveConfig = field(default_factory=LiveConfig)
    """mode=async: the queue's margin, stale items (retired or down-weighted) and when a
    round starts (`async` is a Python keyword, hence the section's name)."""
    reward_init: Literal["previous", "policy"] = "previous"
    """Each round's reward model starts from the previous round's, or from the start policy."""
    reward: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    """Reward-model training: rlhf.reward.train's keys. The loop sets `out_dir` (the round's
    folder), `data.paths` (its snapshot of the store), `model.init` and `runtime`."""
    policy_method: Literal["rl", "dpo", "kto"] = "rl"
    """The policy step: 'rl' trains a reward model on every answer so far, then RL
    against it (sections `reward`, `rl`); 'dpo' optimises the policy directly on this round's
    answers' pairs, of responses sampled from the current policy (on-policy; section `dpo`);
    'kto' optimises it with KTO on this round's ratings and "both bad" comparisons (unpaired
    rows; section `kto`, reference: the starting policy)."""
    dpo_reference: Literal["start", "previous"] = "start"
    """policy_method=dpo: the reference pi_ref of round r's DPO. 'start': the starting policy
    (the same anchor as RL's KL; each round's implicit reward is relative to the start);
    'previous': the previous round's policy (each round a fresh DPO from where it is)."""
    dpo: DPOTrainConfig = field(default_factory=DPOTrainConfig)
    """policy_method=dpo: rlhf.dpo.train's keys. The loop sets `out_dir`, `data.paths` (the
    round's comparisons), `model.init` (the previous round's policy), `model.reference`
    (dpo_reference), `progress` and `runtime`."""
    kto: KTOTrainConfig = field(default_factory=loop_kto)
    """policy_method=kto: rlhf.kto.train's keys. The loop sets `out_dir`, `data.paths` (the
    round's answers), `model.init`, `model.reference` (the starting policy), `progress` and
    `runtime`."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The supervised step on each round's corrections (skipped in a round without any):
    rlhf.sft.train's keys. The loop sets `out_dir` (the round's sft/ folder), `data.paths`
    (the round's corrections), `model.init` (the previous round's policy), `progress` and
    `runtime`; the round's policy step continues from its result."""
    rl: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    """Policy fine-tuning each round: rlhf.policy.train's keys (`steps` is per round). The
    loop sets `policy` (the previous round's), `reference` (the starting policy), `out_dir`,
    `reward.kind`/`reward.path` (this round's reward model), `prompts.path` (the training
    prompts; no hold-out, the loop evaluates), `sampling` and `runtime`."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Per-round evaluation."""
    stop_on_warning: bool = False
    """Stop the loop after a round whose over-optimisation signals warn (rlhf.policy.signals;
    the warnings are printed and reported either way). Re-running continues past it."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.rounds >= 1, "rounds", "must be >= 1")
        require(self.pairs_per_round >= 2, "pairs_per_round", "must be >= 2")
        require(self.oversample >= 1, "oversample", "must be >= 1")
        require(bool(self.out_dir), "out_dir", "must name a folder")
        require(not (self.policy_method != "rl" and self.selection == "disagreement"),
                "selection", "disagreement ranks pairs by a reward-model ensemble, which "
                f"policy_method={self.policy_method} does not train; use selection=random")
        require(1 <= self.rate_k <= MAX_RANK_K, "rate_k", f"must be 1 to {MAX_RANK_K}")
        require(3 <= self.rank_k <= MAX_RANK_K, "rank_k", f"must be 3 to {MAX_RANK_K}, got "
                f"{self.rank_k}")
        require(self.selection == "random" or set(
            a for a, w in self.mix.weights().items() if w > 0) == {"compare"}, "selection",
            "disagreement ranks pairs to compare; with other kinds in `mix` use "
            "selection=random")
        if self.mode == "async":
            why = "mode=async"
            require(self.rater.kind in ("web", "human"), "rater.kind", f"{why} serves the "
                    "rating page (rater.kind=web) or `rlhf rate` in terminals (rater.kind="
                    "human) for the whole run: use one of them")
            require(self.policy_method == "rl", "policy_method", f"{why} trains a reward "
                    "model on every answer so far: use policy_method=rl")
            require(self.mix.correct == 0, "mix.correct", f"{why} has no per-round "
                    "supervised step on corrections: set mix.correct=0")
        defaults = {"reward": RewardTrainConfig(), "rl": PolicyTrainConfig(),
                    "dpo": DPOTrainConfig(), "sft": SFTConfig(), "kto": loop_kto()}
        for section, keys in LOOP_SETS.items():
            for key, why in keys.items():
                require(get_key(getattr(self, section), key) == get_key(defaults[section], key),
                        f"{section}.{key}", f"is set by the loop ({why}); remove it")
