"""The tree is the pipeline: every rlhf module imports in a fresh interpreter, packages import
only from those before them (no cycle at any level), no rlhf import hides inside a function,
and modules and functions stay near their size limits."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rlhf"
LAYERS = [  # each may import from its own layer (no cycles) and the ones above it
    ["rlhf.files", "rlhf.config"],
    ["rlhf.prompts"],
    ["rlhf.harness"],
    ["rlhf.lm"],
    ["rlhf.feedback"],
    ["rlhf.raters"],
    ["rlhf.preferences"],
    ["rlhf.reward"],
    ["rlhf.policy"],
    ["rlhf.dpo"],
    ["rlhf.sft"],
    ["rlhf.kto"],
    ["rlhf.loop"],
    ["rlhf.cli", "rlhf.__main__", "rlhf.configref"],
]


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        name = ".".join(("rlhf", *f.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = f
    return out


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return -1  # the package root `rlhf` (its __init__ imports nothing)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported rlhf module, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] == "rlhf":
                found.append((n, id(node) in top))
    return found


def resolve(name: str, known: dict) -> str | None:
    """The module an imported dotted name refers to (`rlhf.policy.losses`, not `...L`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(modules())
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_dependencies_point_down_the_pipeline_and_none_hides_in_a_function():
    known = modules()
    graph: dict[str, set[str]] = {}
    for mod, path in known.items():
        for name, at_top in imports(path):
            target = resolve(name, known)
            if target is None or target == mod or target == "rlhf":
                continue
            assert at_top, f"{mod} imports {target} inside a function"
            assert layer_of(target) <= layer_of(mod), f"{mod} imports {target} (upward)"
            graph.setdefault(mod, set()).add(target)
    # no cycle among modules (depth-first search)
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            pytest.fail("import cycle: " + " -> ".join([*trail, m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for t in graph.get(m, ()):
            visit(t, [*trail, m])
        state[m] = 2

    for m in known:
        visit(m, [])


def test_the_layer_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rlhf.loop import cycle\n")
    assert imports(bad) == [("rlhf.loop", False), ("rlhf.loop.cycle", False)]
    assert layer_of("rlhf.loop.cycle") > layer_of("rlhf.reward.train")


def test_modules_and_functions_stay_near_their_limits():
    for mod, path in modules().items():
        lines = path.read_text().count("\n")
        assert lines <= 420, f"{mod}: {lines} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= 65, f"{mod}.{node.name}: {n} lines"


def test_every_package_says_what_it_holds_and_may_import():
    for pkg in ("harness", "lm", "feedback", "raters", "preferences", "reward", "policy", "dpo",
                "loop"):
        doc = ast.get_docstring(ast.parse((ROOT / pkg / "__init__.py").read_text()))
        assert doc and "May import" in doc, pkg


def test_trainers_share_the_harness_and_the_pair_data():
    """DPO reads pairs from rlhf.preferences, not the reward model's module; each trainer's
    `train` is its own loop near 60 lines on rlhf.harness.run; round folders are named once."""
    for path in (ROOT / "dpo").glob("*.py"):
        names = [name for name, _ in imports(path)]
        assert "rlhf.reward.model" not in names, f"{path.name} imports rlhf.reward.model"
    for stage in ("reward", "dpo", "policy"):
        text = (ROOT / stage / "train.py").read_text()
        train = next(n for n in ast.parse(text).body
                     if isinstance(n, ast.FunctionDef) and n.name == "train")
        assert train.end_lineno - train.lineno + 1 <= 60, f"{stage}.train is too long"
        assert "training_run(" in ast.get_source_segment(text, train), stage
    spelled = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(ROOT.rglob("*.py"))
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"round_\{", line)]
    assert [s.split(":")[0] for s in spelled] == ["loop/folder.py"], spelled
