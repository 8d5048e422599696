"""The benchmark harness: isolated measurement, out-of-memory and time caps, comparison, JSON and Markdown."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path
from types import ModuleType

import benchmarks.__main__ as bench_main
import pytest
import torch
from benchmarks import metric_losses, pml_twins
from benchmarks.measure import Case, Measurement, measure
from benchmarks.report import compare, markdown_table, update_docs

# A benchmark module that needs only numpy: its "loss" is a number, its "gradient" an array.
TOY_MODULE = textwrap.dedent(
    """
    import time
    import numpy as np
    from benchmarks.measure import Case

    NAME = "toy"
    TITLE = "toy benchmark"


    class Value:
        def __init__(self, array):
            self.array = np.asarray(array, dtype=np.float64)

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.array

        def __float__(self):
            return float(self.array.sum())


    class Leaf:
        grad = None


    def cases(quick):
        return [
            Case(__name__, "toy", implementation, {"n": n})
            for n in (1, 2)
            for implementation in ("pairloss", "peer")
        ]


    def setup(case):
        if case.implementation == "absent":
            raise ImportError("absent has no toy loss")
        if case.implementation == "broken":
            raise ValueError("broken setup")
        leaf = Leaf()

        class Loss(Value):
            def backward(self):
                leaf.grad = Value(np.full(3, case.params["n"], dtype=np.float64))

        def step():
            if case.implementation == "peer":  # far beyond the memory cap of the tests
                np.ones(2**31).sum()
            if case.implementation == "sleepy":
                time.sleep(60)
            if case.implementation == "hungry":
                block = np.ones(case.params["bytes"] // 8)
                block[::512] = 2.0
            return Loss(2.0 * case.params["n"])

        return step, leaf
    """
)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "toy_bench.py").write_text(TOY_MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_bench"


def _run(module: str, implementation: str, tmp_path: Path, **params: int) -> Measurement:
    case = Case(module, "toy", implementation, {"n": 1, **params})
    # a short cap for the case that never ends, a generous one where a loaded machine must not cause a timeout
    time_cap, grace = (2.0, 1.0) if implementation == "sleepy" else (60.0, 60.0)
    return measure(case, repeats=2, time_cap=time_cap, memory_cap=2**31, grad_dir=tmp_path, grace=grace)


def test_peak_memory_is_what_the_step_held(toy: str, tmp_path: Path) -> None:
    result = _run(toy, "hungry", tmp_path, bytes=200 * 2**20)
    assert result.status == "ok"
    assert len(result.seconds) == 3  # warm-up + 2 timed runs
    assert result.median_s is not None and result.median_s > 0
    assert result.value == 2.0
    assert result.peak_bytes is not None
    assert 190 * 2**20 < result.peak_bytes < 300 * 2**20


@pytest.mark.parametrize(
    ("implementation", "status", "message"),
    [
        ("sleepy", "timeout", "no result within 3 s"),
        ("absent", "missing", "absent has no toy loss"),
        ("broken", "error", "broken setup"),
    ],
)
def test_failures_are_reported_not_raised(
    toy: str, tmp_path: Path, implementation: str, status: str, message: str
) -> None:
    result = _run(toy, implementation, tmp_path)
    assert result.status == status
    assert message in result.message
    assert result.median_s is None and result.peak_bytes is None


def test_main_writes_json_and_table_and_skips_after_oom(
    toy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_main, "discover", lambda: [importlib.import_module(toy)])
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nprose before\n\n<!-- bench:toy:start -->\nold\n<!-- bench:toy:end -->\n\nafter\n")
    bench_main.main(["--out", str(tmp_path / "out"), "--docs", str(docs), "--memory-cap-gb", "2", "--repeats", "1"])
    payload = json.loads((tmp_path / "out" / "toy.json").read_text())
    statuses = [(m["case"]["implementation"], m["case"]["params"]["n"], m["status"]) for m in payload["measurements"]]
    assert statuses == [
        ("pairloss", 1, "ok"),
        ("peer", 1, "oom"),
        ("pairloss", 2, "ok"),
        ("peer", 2, "skipped"),
    ]
    assert payload["settings"]["memory_cap_bytes"] == 2 * 2**30
    assert [row["pairloss_value"] for row in payload["comparisons"]] == [2.0, 4.0]
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nprose before\n") and text.endswith("\n\nafter\n")
    assert "old" not in text and "| OOM |" in text and "| SKIPPED |" in text


def test_compare_ratios_and_table() -> None:
    def made(implementation: str, seconds: float, peak: int, value: float) -> Measurement:
        case = Case("m", "contrastive", implementation, {"n": 8})
        return Measurement(case, "ok", [seconds], seconds, peak, value)

    rows = compare([made("pairloss", 0.5, 100, 1.0), made("pytorch-metric-learning", 2.0, 800, 1.0 + 2e-6)])
    (row,) = rows
    assert row["speedup"] == pytest.approx(4.0)
    assert row["memory_ratio"] == pytest.approx(1 / 8)
    assert row["value_rel_diff"] == pytest.approx(2e-6 / (1 + 2e-6))
    assert row["values_agree"] is True
    assert "| contrastive | 8 | 0.500 | 2.000 | 4.0× |" in markdown_table(rows)


def test_update_docs_appends_when_markers_are_missing(tmp_path: Path) -> None:
    docs = tmp_path / "b.md"
    docs.write_text("# Title\n")
    update_docs(docs, "x", "| a |")
    update_docs(docs, "x", "| b |")
    assert docs.read_text() == "# Title\n\n<!-- bench:x:start -->\n| b |\n<!-- bench:x:end -->\n"


@pytest.mark.parametrize(
    ("module", "loss"),
    [(metric_losses, loss) for loss in sorted(metric_losses.LOSSES)]
    + [(pml_twins, loss) for loss in sorted(pml_twins.TWINS)],
)
def test_cases_agree_with_pml(module: ModuleType, loss: str) -> None:
    values, grads = [], []
    for implementation in module.IMPLEMENTATIONS:
        case = Case(module.__name__, loss, implementation, {"n": 60, "d": 8, "classes": 6, "seed": 0})
        try:
            step, leaf = module.setup(case)
        except ImportError as error:
            pytest.skip(str(error))
        value = step()
        value.backward()
        values.append(value.detach())
        grads.append(leaf.grad)
    assert torch.allclose(values[0], values[1], rtol=1e-5, atol=1e-7)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_discover_finds_the_metric_loss_benchmarks() -> None:
    assert {metric_losses, pml_twins} <= set(bench_main.discover())


def test_every_pml_twin_is_a_public_pairloss_loss() -> None:
    import pairloss

    assert all(isinstance(getattr(pairloss, twin.cls, None), type) for twin in pml_twins.TWINS.values())
    assert {case.loss for case in pml_twins.cases(quick=True)} == set(pml_twins.TWINS)


def test_full_cases_cover_the_issue_sizes() -> None:
    full = metric_losses.cases(quick=False)
    assert {case.params["n"] for case in full} == {2048, 8192, 16384, 32768}
    assert {case.loss for case in full} == {"contrastive", "multi_similarity", "triplet_all"}
    assert all(case.params["d"] == 128 and case.params["classes"] == 100 for case in full)
    # the two libraries of one size run back to back
    assert [case.implementation for case in full[:2]] == ["pairloss", "pytorch-metric-learning"]
