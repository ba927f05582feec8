"""The user's manual stays true to the code: the configuration reference is the generated one,
every relative link in docs/ and README.md leads to a file that exists, no change report
(docs/issue-*.md) has crept back in, and every command has the script the manual promises."""

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

from rlhf.cli import COMMANDS
from rlhf.configref import REGENERATE, render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_the_configuration_reference_is_generated_from_the_code():
    page = DOCS / "configuration.md"
    assert page.is_file(), f"docs/configuration.md is missing: run `{REGENERATE}`"
    assert page.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md is out of date with the config classes: run `{REGENERATE}`")


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text that point into the tree (no URL, no bare anchor),
    outside fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        out.append(unquote(target.split("#", 1)[0]))
    return out


def test_every_relative_link_points_to_a_file():
    broken = []
    for page in pages():
        for target in relative_links(page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == [], "links to missing files:\n" + "\n".join(broken)


def test_the_link_check_can_fail():
    text = "[a](docs/x.md) ![b](images/y.png \"t\") [c](https://e.org/z) [d](#here)\n" \
           "```\n[e](not/a/link.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "images/y.png"]


def test_no_change_reports_in_the_manual():
    reports = sorted(p.name for p in DOCS.glob("issue-*.md"))
    assert reports == [], f"change reports belong in the history, not in docs/: {reports}"


def test_every_command_has_its_script():
    """getting-started.md: `python scripts/<command>.py` (`_` for `-`) is `rlhf <command>`."""
    missing = [name for name in COMMANDS
               if f'main(["{name}", *sys.argv[1:]])' not in script_text(name)]
    assert missing == [], f"commands without their scripts/ entry: {missing}"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_dpo.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "rlhf train-dpo" in out.stdout, out.stderr[-2000:]


def script_text(name: str) -> str:
    path = ROOT / "scripts" / (name.replace("-", "_") + ".py")
    return path.read_text(encoding="utf-8") if path.is_file() else ""
