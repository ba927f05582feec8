"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write `text` (UTF-8) to `path` atomically: a temporary file beside it (file mode
    `mode`), fsynced, then renamed over it, so a reader sees the old file or the new one,
    never half. A failure (a full disk) leaves the old file, or none, and no temporary
    file, and its OSError names `path` (ENOSPC names no file by itself)."""
    p = Path(path)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8",
                  opener=lambda name, flags: os.open(name, flags, mode)) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(p)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
