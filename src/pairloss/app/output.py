"""Output folders of the commands, checked before any work starts (a file in the way or no permission is a
``ValueError`` at once, not after an hour of training)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["output_folder"]


def output_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and check that files can be written there; ``ValueError`` naming
    the folder otherwise (a file in the way, no permission)."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"cannot write results to {path}: {folder} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the folder {path}: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write results to {path}: no write permission")
    return path
