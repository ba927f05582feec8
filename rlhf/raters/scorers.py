"""Real scorers that nobody here wrote: the hidden ground truth of simulated raters and the
direct reward of RL baselines. Each maps a list of texts to a list of floats.

- `vader`: VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014, the `vaderSentiment`
  package): "prefers the happier story".
- `length`: number of words (a deliberately shallow baseline).

Plug-in point: anywhere a scorer is named (`rater.scorer`, `eval.gold_scorer`,
`rl.reward.scorer`), a Python import path `module:function` names your own: a function from a
list of texts to a list of floats (one per text), or a class whose instances are such
functions (made with no arguments). For `rater.scorer` it may also be a rater class with
`rate_many(items) -> comparisons`, made as `cls(seed=..., name=...)`. The module is imported
and the name checked when the config loads (`scorer_problem`); a wrong name, a failed import
or a scorer returning the wrong number of scores is one line (`ScorerError`).

Edits that raise a score, for simulated corrections (`rlhf.raters.simulated`): `sentences`
splits a text into its sentences (any scorer: the corrector drops the lowest-scoring one), and
`REWRITERS` names a scorer's rewrite of one sentence: for "vader", `vader_rewrite` replaces the
words VADER's lexicon scores negative by their plain opposites (`OPPOSITES`).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from functools import lru_cache

from rlhf.config import UserError


class ScorerError(UserError, KeyError):
    """A scorer name that does not resolve, or a scorer that broke its contract."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


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


def resolve(name: str):
    """What a scorer name names: a built-in scorer, or the object at a `module:attr` path
    (a class is returned as it is). Raises ScorerError (one line) when it does not resolve."""
    if name in SCORERS:
        return SCORERS[name]
    if ":" not in name:
        raise ScorerError(f"unknown scorer {name!r}; known: {sorted(SCORERS)} or a Python "
                          "import path 'module:function'")
    module_name, _, attr = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # any failure of the user's module is reported, in one line
        raise ScorerError(f"scorer {name!r}: cannot import {module_name!r} "
                          f"({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ScorerError(f"scorer {name!r}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ScorerError(f"scorer {name!r}: {attr!r} is not a function or class")
    return obj


def is_rater_class(obj) -> bool:
    return isinstance(obj, type) and hasattr(obj, "rate_many")


def scorer_problem(name: str, rater: bool = False) -> str | None:
    """Why `name` is not a usable scorer (None when it is); `rater`: a rater class is fine."""
    try:
        obj = resolve(name)
    except ScorerError as e:
        return str(e)
    if is_rater_class(obj) and not rater:
        return f"scorer {name!r} is a rater class; a function of texts is needed here"
    return None


def checked(fn, name: str) -> Callable[[list[str]], list[float]]:
    """`fn` with its contract checked on every call: one finite float per text."""
    def score(texts: list[str]) -> list[float]:
        out = fn(list(texts))
        try:
            out = [float(v) for v in out]
        except (TypeError, ValueError) as e:
            raise ScorerError(f"scorer {name!r} must return numbers ({e})") from None
        if len(out) != len(texts) or not all(math.isfinite(v) for v in out):
            raise ScorerError(f"scorer {name!r} returned {len(out)} scores for {len(texts)} "
                              "texts (one finite number per text is needed)")
        return out
    return score


def get_scorer(name: str) -> Callable[[list[str]], list[float]]:
    """The scorer function a name names (built-in or `module:function`), contract-checked."""
    if name in SCORERS:
        return SCORERS[name]
    obj = resolve(name)
    problem = scorer_problem(name)
    if problem:
        raise ScorerError(problem)
    return checked(obj() if isinstance(obj, type) else obj, name)


# ----------------------------------------------------------------------------- edits

OPPOSITES = {
    "sad": "happy", "sadly": "happily", "scared": "brave", "scary": "fun", "scare": "cheer",
    "cry": "smile", "cried": "smiled", "crying": "smiling", "cries": "smiles", "bad": "good",
    "wrong": "right", "angry": "calm", "mad": "glad", "lost": "found", "tired": "rested",
    "worried": "calm", "lonely": "loved", "alone": "together", "broken": "fixed",
    "broke": "fixed", "upset": "glad", "ugly": "pretty", "stuck": "free",
    "frustrated": "pleased", "confused": "curious", "poor": "lucky", "terrible": "wonderful",
    "awful": "wonderful", "hate": "love", "hated": "loved", "fight": "play",
    "fought": "played", "strange": "special", "difficult": "easy", "screamed": "laughed",
    "scream": "laugh", "selfish": "kind", "weak": "strong", "sick": "well", "bored": "busy",
    "rude": "polite", "shy": "brave", "nervous": "calm", "boring": "exciting",
}
"""Plain opposites of negative words (by VADER's lexicon) that children's stories use, each
scored higher by VADER (tests/test_simulated_kinds.py checks it). Words with more than one
sense whose opposite depends on it ("hurt", "no", "stop") are left out."""

_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_WORD = re.compile(r"[A-Za-z]+")


def sentences(text: str) -> list[str]:
    """`text` cut after each sentence end (. ! ? then closing quotes, then white space, kept
    with its sentence), never inside an open double quote; "".join(result) == text."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start:m.end()]
        if piece.count('"') % 2 == 0 and piece.count("\u201c") == piece.count("\u201d"):
            out.append(piece)
            start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def vader_rewrite(sentence: str) -> str:
    """`sentence` with each lowercase word VADER's lexicon scores negative replaced by its
    opposite (`OPPOSITES`); capitalised words (names: "Mia" is in the lexicon) and words
    without a known opposite stay."""
    lexicon = _vader().lexicon

    def swap(m: re.Match) -> str:
        w = m.group(0)
        return OPPOSITES.get(w, w) if lexicon.get(w, 0.0) < 0 else w
    return _WORD.sub(swap, sentence)


REWRITERS: dict[str, Callable[[str], str]] = {"vader": vader_rewrite}
"""A scorer's rewrite of one sentence to raise its score (none for the others)."""
