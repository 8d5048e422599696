"""Bad command lines: a usage error naming the option, before any work starts, never a traceback.

The expensive parts (training, recipes) are replaced by stand-ins that fail the test if they are reached when the
command line was bad, and record their arguments when it was good.
"""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

import pairloss
from pairloss.app import cli, demo
from pairloss.losses.base import registered_losses

runner = CliRunner()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for the demo, the training and the recipes that record the arguments they were called with."""
    calls: dict[str, Any] = {}
    monkeypatch.setattr("pairloss.app.demo.run_demo", lambda **kwargs: calls.setdefault("demo", kwargs))
    monkeypatch.setattr(
        "pairloss.training.experiment.run_experiment", lambda config, **kwargs: calls.setdefault("train", config)
    )
    monkeypatch.setattr(
        "pairloss.recipes.run_experiment", lambda *args, **kwargs: calls.setdefault("reproduce", kwargs)
    )
    return calls


def _usage_error(args: list[str], option: str, *said: str) -> str:
    result = runner.invoke(cli.app, args)
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert option in output, output
    flat = "".join(output.replace("│", " ").split())  # the error box wraps long paths anywhere
    for text in said:
        assert "".join(text.split()) in flat, output
    return output


# --------------------------------------------------------------------------------------------- version


def test_version_is_the_installed_version() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"pairloss {pairloss.__version__}"
    assert pairloss.__version__ == importlib.metadata.version("pairloss")


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pairloss", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pairloss {pairloss.__version__}"


# ----------------------------------------------------------------------------------------------- list


@pytest.mark.parametrize("width", [40, 80, 100, 200])
def test_list_shows_every_loss_whole_at_any_width(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, width=width, color_system=None))
    result = runner.invoke(cli.app, ["list"])
    assert result.exit_code == 0
    text = screen.getvalue()
    in_the_texts = sum(cls.formula.count("…") + cls.paper.count("…") for cls in registered_losses().values())
    assert text.count("…") == in_the_texts, "a cell was cut"
    assert max(cell_len(line) for line in text.splitlines()) <= width  # display cells: s̃ is one
    for name, cls in registered_losses().items():
        assert name in text
        if width < cli.TABLE_WIDTH:  # one block per loss: the paper reads on, wrapped but whole
            assert " ".join(cls.paper.split()) in " ".join(text.split())


# ----------------------------------------------------------------------------------------------- demo


def test_demo_rejects_an_unknown_loss(recorded: dict[str, Any]) -> None:
    _usage_error(["demo", "--loss", "doesnotexist"], "--loss", "unknown loss 'doesnotexist'", "MultiSimilarityLoss")
    assert "demo" not in recorded


@pytest.mark.parametrize("given", ["MultiSimilarityLoss", "multi-similarity", "multisimilarityloss"])
def test_demo_accepts_class_names(recorded: dict[str, Any], given: str) -> None:
    result = runner.invoke(cli.app, ["demo", "--loss", given, "--loss", "TripletMarginLoss", "--out", "unused"])
    assert result.exit_code == 0, result.output
    assert recorded["demo"]["losses"] == ["multi-similarity", "triplet"]


def test_demo_checks_out_before_training(recorded: dict[str, Any], tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _usage_error(["demo", "--out", str(blocker)], "--out", "a_file is a file, not a folder")
    assert "demo" not in recorded


def test_run_demo_checks_its_folder_before_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the output folder is unusable")

    monkeypatch.setattr(demo, "_train", never)
    (tmp_path / "demo").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        demo.run_demo(losses=["contrastive"], updates=1, out=tmp_path)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        demo.run_demo(losses=["nope"], updates=1, out=tmp_path / "fresh")


# ---------------------------------------------------------------------------------------------- train


def test_train_rejects_an_unknown_config(recorded: dict[str, Any]) -> None:
    _usage_error(["train", "doesnotexist"], "Invalid value", "doesnotexist")
    assert "train" not in recorded


def test_train_checks_out_before_loading_data(recorded: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("omegaconf")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _usage_error(["train", "digits", f"out={blocker}"], "out=", "a_file is a file, not a folder")
    assert "train" not in recorded
    result = runner.invoke(cli.app, ["train", "digits", f"out={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert str(recorded["train"].out) == str(tmp_path / "run") and (tmp_path / "run").is_dir()


# ------------------------------------------------------------------------------------------ reproduce


def test_reproduce_checks_out_before_running(recorded: dict[str, Any], tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _usage_error(["reproduce", "sbcr", "--quick", "--out", str(blocker)], "--out", "is a file, not a folder")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sbcr").write_text("")
    _usage_error(["reproduce", "sbcr", "--out", str(tmp_path / "out")], "--out", "sbcr is a file")
    assert "reproduce" not in recorded


def test_reproduce_rejects_an_unknown_recipe(recorded: dict[str, Any]) -> None:
    _usage_error(["reproduce", "doesnotexist"], "NAME", "unknown recipe 'doesnotexist'")
    _usage_error(["reproduce"], "NAME", "give a recipe NAME")
    assert "reproduce" not in recorded


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["demo", "--updates", "0"], "--updates"),
        (["reproduce", "sbcr", "--seeds", "0"], "--seeds"),
        (["demo", "--seeds", "many"], "--seeds"),
    ],
)
def test_numeric_options_are_range_checked(recorded: dict[str, Any], args: list[str], option: str) -> None:
    _usage_error(args, option)
    assert not recorded
