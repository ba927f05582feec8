"""The raters' private links: a random token per rater, kept only as its SHA-256 hash.

`STORE.raters.json` (mode 0600) maps each rater's name to `"sha256:<hex>"`. A link is shown
once, when its token is made; a restart cannot show it again (a hash gives no token back), so
it says the link is unchanged, and `--new-link NAME` makes a new one (the old one stops
working). The tokens are 18 random bytes (144 bits), so a plain hash is enough: nobody can
guess one to try against it. A file written before links were hashed (`{"ann": "TOKEN"}`) is
read and rewritten hashed, and those links are shown one last time.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from rlhf.config import UserError
from rlhf.files import write_atomic

PREFIX = "sha256:"


def digest(token: str) -> str:
    """The stored form of a token: `sha256:` and the hex digest of its UTF-8 bytes."""
    return PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _read(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a raters file ({e}); move it aside to make new "
                        "links") from None
    if not isinstance(kept, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in kept.items()):
        raise UserError(f"{path}: expected {{name: token hash}}; move it aside to make new "
                        "links")
    return kept


def _write(path: Path, kept: dict[str, str]) -> None:
    """Write `kept` atomically with mode 0600 (the temporary file removed on any failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(kept, indent=1), mode=0o600)


def rater_tokens(path: str | os.PathLike, names: list[str],
                 renew: list[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """({name: digest} for `names`, {name: token} for the links to show now): a token is made
    for each name without one and each name in `renew`; a plain-text token of an older file
    is hashed (and shown this last time). The file is rewritten only when something changed
    (other raters' entries kept)."""
    path = Path(path)
    unknown = sorted(set(renew) - set(names))
    if unknown:
        raise UserError(f"--new-link {','.join(unknown)}: not among the raters served")
    kept = _read(path)
    shown = {n: kept[n] for n in names if n in kept and not kept[n].startswith(PREFIX)}
    hashed = {n: v if v.startswith(PREFIX) else digest(v) for n, v in kept.items()}
    for n in names:
        if n not in hashed or n in renew:
            shown[n] = secrets.token_urlsafe(18)
            hashed[n] = digest(shown[n])
    if hashed != kept:
        _write(path, hashed)
    return {n: hashed[n] for n in names}, shown


def link_lines(names: list[str], shown: dict[str, str], base: str) -> list[str]:
    """One line per rater: the link when it is shown now, else that it is unchanged."""
    return [f"  {n:<20} {base}/r/{shown[n]}" if n in shown else
            f"  {n:<20} (link unchanged: the one given before; --new-link {n} makes a new one)"
            for n in names]
