"""Progress a person can watch: a tqdm bar with the step's key figures when stderr is a
terminal, and a plain line every `every_s` seconds (and at the end) when it is not (CI, logs).

    bar = Progress("policy", total=80)
    for step in ...:
        ...
        bar.update(reward=0.41, kl_tok=0.12)
    bar.close()
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def figures(values: dict) -> str:
    """'reward 0.412 kl_tok 0.120' from {name: number or text}."""
    return " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in values.items())


class Progress:
    """One stage's progress on stderr; `enabled=False` (other ranks, tests) prints nothing."""

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True,
                 every_s: float = 15.0, stream=None):
        self.desc, self.total, self.n, self.every_s = desc, total, initial, every_s
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream,
                        dynamic_ncols=True) if self.tty else None
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
