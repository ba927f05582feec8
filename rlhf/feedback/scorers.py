"""Real scorers that nobody here wrote: the hidden ground truth of simulated raters and the
direct reward of RL baselines. Each maps a list of texts to a list of floats.

- `vader`: VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014, the `vaderSentiment`
  package): "prefers the happier story".
- `length`: number of words (a deliberately shallow baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache


@lru_cache(maxsize=1)
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError("the 'vader' scorer needs `pip install vaderSentiment`") from e
    return SentimentIntensityAnalyzer()


def vader(texts: list[str]) -> list[float]:
    """VADER compound sentiment of each text, in [-1, 1]."""
    analyzer = _vader()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def length(texts: list[str]) -> list[float]:
    """Words in each text."""
    return [float(len(t.split())) for t in texts]


SCORERS: dict[str, Callable[[list[str]], list[float]]] = {"vader": vader, "length": length}


def get_scorer(name: str) -> Callable[[list[str]], list[float]]:
    if name not in SCORERS:
        raise KeyError(f"unknown scorer {name!r}; known: {sorted(SCORERS)}")
    return SCORERS[name]
