"""Optional dependencies: imported where they are used, with an error that names the extra that installs them.

The core (losses, engine, similarities, the torch-only metrics) needs only torch and numpy; faiss, scikit-learn,
scipy, scikit-image, matplotlib, typer, rich and optuna come with the extras listed in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` saying which ``pairloss[extra]`` installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        raise ImportError(
            f"this part of pairloss needs {top!r}, which is not installed: pip install 'pairloss[{extra}]'"
        ) from error
