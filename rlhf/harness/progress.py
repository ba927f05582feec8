"""Progress a person can watch, the one implementation every long command uses: a tqdm bar with
the step's key figures when stderr is a terminal, and a plain line every `every_s` seconds
(and at the end) when it is not (CI, logs, a pipe). The interval defaults to 15 s; the
environment variable RLHF_PROGRESS_EVERY sets it for every command (seconds, 0: a line per
update).

A training stage holds its bar (`rlhf.harness.run`):

    bar = Progress("policy", total=80)
    for step in ...:
        ...
        bar.update(reward=0.41, kl_tok=0.12)
    bar.close()

A command whose work happens in batched loops deep inside (sampling, scoring, log-probs of
pairs, reading a file) opens one with `with` and the loops report to it with `advance(n)`;
with none open, `advance` does nothing (a caller that shows nothing, or its own bar):

    with Progress("sample-pairs", total=len(rows)):
        sample(...)                # calls advance(len(batch)) after each batch
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from rlhf.config import UserError

EVERY_ENV = "RLHF_PROGRESS_EVERY"
_OPEN: list[Progress] = []  # the Progress objects opened with `with`, innermost last


def figures(values: dict) -> str:
    """'reward 0.412 kl_tok 0.120' from {name: number or text}."""
    return " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in values.items())


def default_every() -> float:
    """Seconds between plain lines: RLHF_PROGRESS_EVERY, else 15; a bad value is one error."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return 15.0
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not every >= 0:  # also nan
        raise UserError(f"{EVERY_ENV}={raw!r}: give seconds between progress lines (>= 0)")
    return every


class Progress:
    """One stage's progress on stderr; `enabled=False` (other ranks, tests) prints nothing.
    `every_s` None: `default_every()`."""

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True,
                 every_s: float | None = None, stream=None):
        self.desc, self.total, self.n = desc, total, initial
        self.every_s = default_every() if every_s is None else every_s
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        # leave=None: a bar opened inside another (the loop's) goes away when it ends
        self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream,
                        dynamic_ncols=True, leave=None) if self.tty else None
        self.t0 = self.last = time.time()
        self.values: dict = {}

    def update(self, n: int = 1, **values) -> None:
        self.n += n
        self.values = values
        if self.bar is not None:
            self.bar.set_postfix_str(figures(values), refresh=False)
            self.bar.update(n)
        elif self.enabled and (time.time() - self.last >= self.every_s or self.n >= self.total):
            self.line()

    def line(self) -> None:
        self.last = time.time()
        print(f"{self.desc}: {self.n}/{self.total} ({self.last - self.t0:.0f}s) "
              f"{figures(self.values)}".rstrip(), file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A line (a warning) that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        elif self.enabled:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _OPEN.remove(self)
        self.close()


def advance(n: int = 1, **values) -> None:
    """`n` more items done, reported to the innermost Progress opened with `with` (none open:
    nothing). Batched loops call this after each batch."""
    if _OPEN:
        _OPEN[-1].update(n, **values)
