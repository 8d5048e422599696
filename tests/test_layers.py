"""The package's layers: a torch-only core, and no module importing from a layer above its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pairloss

SOURCE = Path(pairloss.__file__).parent

#: Bottom to top. A module may import from its own layer and the layers below it.
LAYERS = ("core", "metrics", "data", "training", "recipes", "app")

#: Libraries that come with extras: the core must import none of them.
OPTIONAL = ("faiss", "sklearn", "scipy", "skimage", "matplotlib", "typer", "rich", "optuna", "pandas", "omegaconf")


def layer_of(module: str) -> str:
    """The layer of a ``pairloss`` module name."""
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 else ""
    if sub in ("app", "__main__"):
        return "app"
    if sub in ("recipes", "training", "metrics"):
        return sub
    if sub in ("data", "models"):
        return "data"
    return "core"


def module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``pairloss`` module that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pairloss"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pairloss"):
            found.add(node.module)
    return found


def test_layer_of_knows_every_layer():
    assert [layer_of(m) for m in ("pairloss.engine", "pairloss.losses.metric", "pairloss.metrics.ranking")] == [
        "core",
        "core",
        "metrics",
    ]
    assert {layer_of(m) for m in ("pairloss.data.glyphs", "pairloss.models.mlp")} == {"data"}
    assert [layer_of(m) for m in ("pairloss.training.trainer", "pairloss.recipes.base", "pairloss.app.cli")] == [
        "training",
        "recipes",
        "app",
    ]


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(SOURCE.rglob("*.py")):
        name = module_name(path)
        if name == "pairloss":
            continue  # the package root re-exports the core and the metrics
        own = LAYERS.index(layer_of(name))
        for target in imported_modules(path):
            if LAYERS.index(layer_of(target)) > own:
                upward.append(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})")
    assert not upward, "\n".join(upward)


_BLOCK_OPTIONAL = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ImportError(f"{{name}} is not installed")
        return None
sys.meta_path.insert(0, Block())
"""


def _run_without_optional(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_OPTIONAL + code], capture_output=True, text=True, timeout=120, check=False
    )


def test_core_works_with_only_torch_and_numpy():
    """With every optional library unimportable, the core imports and a loss, its gradient and a metric run."""
    result = _run_without_optional(
        f"""
import sys, torch, pairloss
import pairloss.data.samplers, pairloss.training
x = torch.randn(32, 8, requires_grad=True)
y = torch.arange(32) % 4
pairloss.MultiSimilarityLoss()(x, y).backward()
print(pairloss.metrics.ndcg_at_k(torch.randn(3, 5), torch.randint(0, 3, (3, 5)), k=3))
print(sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r}))
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("pairloss.metrics.retrieval(torch.randn(8, 4), torch.arange(8) % 2, k=(1,))", "retrieval"),
        ("pairloss.metrics.auc(torch.rand(8), torch.arange(8) % 2)", "metrics"),
    ],
)
def test_a_missing_extra_is_named_in_the_error(code, extra):
    result = _run_without_optional(f"import torch, pairloss\n{code}")
    assert result.returncode != 0
    assert f"pairloss[{extra}]" in result.stderr
