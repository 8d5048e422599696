"""Every ```python block of README.md and docs/ runs: the documentation's examples are tested code.

Each block runs on its own, in a fresh namespace, as a reader who copies it would run it. A block that builds on
the one before says so in its title (```` ```python title="continued from ..." ````, shown above the code) and runs
in the namespace of the blocks before it.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
CONTINUED = re.compile(r'title="continued\b')


def _blocks(page: Path) -> list[tuple[bool, str]]:
    """``(continues the previous block, code)`` for each Python block of the page."""
    return [(bool(CONTINUED.search(info)), code) for info, code in BLOCK.findall(page.read_text())]


def test_the_pages_have_examples() -> None:
    assert sum(len(_blocks(page)) for page in PAGES) >= 5


def test_a_continued_block_has_a_block_before_it() -> None:
    for page in PAGES:
        blocks = _blocks(page)
        assert not (blocks and blocks[0][0]), f"the first block of {page.name} cannot continue another"


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for number, (continued, code) in enumerate(_blocks(page), start=1):
        if not continued:
            namespace = {"__name__": "__docs__"}
        try:
            exec(compile(code, f"{page.name}[{number}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"example {number} of {page.relative_to(ROOT)} failed: {error!r}") from error
