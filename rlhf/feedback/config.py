"""Typed configuration of the feedback stage: `rlhf sample-pairs` (`PairsConfig`). Each field's
docstring is its documentation; `check()` rejects impossible values by key."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import RuntimeConfig, require
from rlhf.feedback.records import ASKS, THUMBS
from rlhf.lm.config import SamplingConfig

MAX_RANK_K = 9
"""Most responses a rank item shows (InstructGPT's labellers ranked 4 to 9)."""
MAX_SCALE_POINTS = 11
"""Most points a rating scale has (0-10)."""


@dataclass
class AskMix:
    """What the queue's items ask, as relative weights (they need not sum to 1; 0 = none of
    that kind). Each prompt gets one ask, drawn in proportion to the weights."""

    compare: float = 1.0
    """Compare two responses (a, b, tie, both bad...)."""
    rank: float = 0.0
    """Put `rank_k` responses in order, ties allowed."""
    rate: float = 0.0
    """Rate one response on `scale` (thumbs up/down by default)."""
    correct: float = 0.0
    """Rewrite one response into a better one."""

    def weights(self) -> dict[str, float]:
        """{ask: weight} in the order of `records.ASKS`."""
        return {ask: float(getattr(self, ask)) for ask in ASKS}

    def check(self) -> None:
        for ask, w in self.weights().items():
            require(w >= 0, ask, f"a weight must be >= 0, got {w}")
        require(sum(self.weights().values()) > 0, "compare",
                "at least one of compare, rank, rate, correct must be > 0")


@dataclass
class ScaleConfig:
    """The scale rate items ask for: thumbs (0 down, 1 up) or points from low to high."""

    name: str = "thumbs"
    """Name shown and stored with each rating ('thumbs' must be 0..1)."""
    low: int = 0
    """Lowest point (the worst)."""
    high: int = 1
    """Highest point (the best)."""
    anchors: list[str] = field(default_factory=list)
    """Words of the points from low to high, one per point ('' = no word for that point),
    e.g. ["very bad", "", "", "neither", "", "", "very good"] for 1..7; [] = none (thumbs:
    'bad' and 'good')."""

    def as_item_scale(self) -> dict | None:
        """The `scale` put on rate items: None for plain thumbs (records.THUMBS), else
        {"name", "low", "high", "anchors": {point: word}}."""
        words = self.anchors or (["bad", "good"] if self.name == "thumbs" else [])
        anchors = {str(self.low + i): w for i, w in enumerate(words) if w}
        scale = {"name": self.name, "low": self.low, "high": self.high, "anchors": anchors}
        return None if scale == THUMBS else scale

    def check(self) -> None:
        require(bool(self.name.strip()), "name", "must not be empty")
        require(self.low < self.high, "high", f"must be more than low ({self.low})")
        points = self.high - self.low + 1
        require(points <= MAX_SCALE_POINTS, "high",
                f"a scale has at most {MAX_SCALE_POINTS} points, got {points}")
        if self.name == "thumbs":
            require((self.low, self.high) == (0, 1), "low", "a thumbs scale is 0 (down) to "
                    "1 (up); give another name for another scale")
        require(not self.anchors or len(self.anchors) == points, "anchors",
                f"one word per point ({points} from {self.low} to {self.high}), got "
                f"{len(self.anchors)}")


@dataclass
class PairsConfig:
    """`rlhf sample-pairs`: responses per prompt into a queue to rate (two to compare, K to
    rank, one to rate or correct)."""

    model: str = "../shared/models/stories260K"
    """Policy folder (llama2.c or HF-style) to sample from."""
    prompts: str = ""
    """Prompt file ('' = TinyStories story openings from ../shared; rlhf.prompts says how
    each kind of file is read)."""
    prompt_column: str = ""
    """Key of the prompt in JSON/JSONL/parquet/dataset rows ('' = the first of prompt,
    messages, text)."""
    prompt_split: str = "train"
    """Split of a `datasets` folder saved as a DatasetDict, or of a Hub dataset."""
    out: str = "queue.jsonl"
    """Queue file to write (JSON lines of items)."""
    n_prompts: int = 20
    """Use at most this many prompts (0 = all)."""
    mix: AskMix = field(default_factory=AskMix)
    """What the items ask: each prompt's ask is a seeded draw in these proportions (the
    counts are the weights' shares of the prompts, rounded; which prompt gets which is
    shuffled by runtime.seed). Default: every item compares two."""
    rank_k: int = 4
    """Responses sampled for each rank item (3 to 9)."""
    rate_k: int = 1
    """Responses sampled for each prompt asked to rate, each rated as its own item: 1 gives
    unpaired rows (KTO); 2 or more also gives the reward model / DPO pairs between the
    responses one rater rated differently."""
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    """The scale of rate items."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=96))
    """How the responses are drawn."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Seed, threads, device."""

    def check(self) -> None:
        require(self.n_prompts >= 0, "n_prompts", "must be >= 0")
        require(bool(self.out), "out", "must name a file")
        require(1 <= self.rate_k <= MAX_RANK_K, "rate_k", f"must be 1 to {MAX_RANK_K}")
        require(3 <= self.rank_k <= MAX_RANK_K, "rank_k", f"must be 3 to {MAX_RANK_K} (two "
                f"responses are a comparison: use mix.compare), got {self.rank_k}")
