"""Reading a recipe's previous ``results.json`` to resume it, without losing a file that cannot be resumed.

A file that is not JSON (truncated by an interrupted write, not UTF-8), that does not hold a results object, or that
was written by another configuration is not resumed. Since the run will replace it, it is first copied to
``results.json.bak`` (``.bak1``, ``.bak2``, ... when that exists) with a warning saying why.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

__all__ = ["read_previous", "set_aside"]


def set_aside(path: Path, reason: str) -> Path:
    """Copy ``path`` to the first free ``path.bak``, ``path.bak1``, ..., warn that it will be replaced, return the
    copy's path."""
    backup, number = path.with_name(path.name + ".bak"), 0
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.bak{number}")
    shutil.copy2(path, backup)
    warnings.warn(f"{path} {reason}; it will be replaced (a copy is kept in {backup})", stacklevel=3)
    return backup


def read_previous(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no file, or (set aside) when it holds no JSON object."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        set_aside(path, f"is not valid JSON ({error})")
        return None
    if not isinstance(saved, dict):
        set_aside(path, f"does not hold a results object (found a JSON {type(saved).__name__})")
        return None
    return saved
