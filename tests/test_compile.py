"""The engine losses under ``torch.compile(fullgraph=True)`` and without host synchronisation.

``fullgraph=True`` fails on any graph break: a value read back to the host (``.item()``, ``bool(t)``,
``.tolist()``), a data-dependent size (``nonzero``), or Python the tracer cannot follow. The default suite compiles
with the ``aot_eager`` backend (the whole forward and backward traced into graphs, run by eager kernels: the
fullgraph check without minutes of C++ code generation); the ``slow`` test runs the inductor backend itself.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from benchmarks.profile_engine import counts

import pairloss
from pairloss import engine, links

LOSSES: dict[str, Callable[[], torch.nn.Module]] = {
    "contrastive": pairloss.ContrastiveLoss,
    "multi_similarity": pairloss.MultiSimilarityLoss,
    "triplet": pairloss.TripletMarginLoss,
    "supcon": pairloss.SupConLoss,
    "rs_at_k": lambda: pairloss.RecallAtKSurrogateLoss(k=(1, 2, 4), tau2=0.1),
}


def _batch(n: int = 18, d: int = 5, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(n, d, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return embeddings, labels


def _value_and_gradient(loss: Callable[..., torch.Tensor], embeddings: torch.Tensor, labels: torch.Tensor):
    x = embeddings.clone().requires_grad_(True)
    value = loss(x, labels)
    value.backward()
    assert x.grad is not None
    return value.detach(), x.grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fullgraph_compile_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    embeddings, labels = _batch()
    loss = LOSSES[name]()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value, gradient = _value_and_gradient(compiled, embeddings, labels)
    expected_value, expected_gradient = _value_and_gradient(loss, embeddings, labels)
    assert float(expected_value) != 0.0  # a batch on which every loss is active
    torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-8, atol=1e-10)


def test_fullgraph_compile_with_blocks_and_reference_set() -> None:
    """Several engine blocks (the unrolled block loop) and a separate reference set."""
    torch._dynamo.reset()
    embeddings, labels = _batch(n=20)
    reference, reference_labels = _batch(n=11)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pairloss.functional.multi_similarity_loss(
            x, y, ref_emb=reference, ref_labels=reference_labels, block_size=6
        )

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value, gradient = _value_and_gradient(compiled, embeddings, labels)
    expected_value, expected_gradient = _value_and_gradient(loss, embeddings, labels)
    torch.testing.assert_close(value, expected_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["contrastive", "multi_similarity"])
def test_inductor_compile_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    embeddings, labels = _batch()
    embeddings = embeddings.float()
    loss = LOSSES[name]()
    value, gradient = _value_and_gradient(torch.compile(loss, fullgraph=True), embeddings, labels)
    expected_value, expected_gradient = _value_and_gradient(loss, embeddings, labels)
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["contrastive", "multi_similarity"])
def test_no_host_synchronisation_with_checks_off(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync-free path (the one CUDA and torch.compile take), selected on the CPU with both sparse densities at 0:
    forward + backward over several blocks makes one read-back (the input check) with the checks on, none off."""
    monkeypatch.setattr(engine, "SPARSE_SLOPE_DENSITY", 0.0)
    monkeypatch.setattr(links, "SPARSE_MASK_DENSITY", 0.0)
    assert engine.sync_free(torch.device("cpu"))
    embeddings, labels = _batch(n=300, d=16, classes=10)
    x = embeddings.float().requires_grad_(True)
    loss = LOSSES[name]()

    def step() -> torch.Tensor:
        return loss(x, labels)

    with pairloss.memory_budget(300 * 64 * 4 * 8):  # a few blocks
        checked = counts(step, x)
        with pairloss.checks(False):
            unchecked = counts(step, x)
    print(f"{name} at N = 300: {checked} with the checks, {unchecked} without")
    assert checked["host_syncs"] == 1
    assert unchecked["host_syncs"] == 0
    assert unchecked["kernels"] < checked["kernels"]


@pytest.mark.parametrize("name", ["contrastive", "multi_similarity"])
def test_cpu_default_path_reads_counts_back(name: str) -> None:
    """On the CPU the engine by default reads the counts of active pairs back to choose its sparse products (free
    there); accelerators and compiled code never do."""
    assert not engine.sync_free(torch.device("cpu"))
    assert engine.sync_free(torch.device("cuda"))
    embeddings, labels = _batch(n=300, d=16, classes=10)
    x = embeddings.float().requires_grad_(True)
    loss = LOSSES[name]()
    with pairloss.memory_budget(300 * 64 * 4 * 8), pairloss.checks(False):
        unchecked = counts(lambda: loss(x, labels), x)
    print(f"{name} at N = 300 on the CPU's default path: {unchecked} without the checks")
    assert unchecked["host_syncs"] > 0


def test_checks_switch() -> None:
    embeddings, labels = _batch()
    embeddings[2, 1] = float("nan")
    loss = pairloss.ContrastiveLoss()
    with pytest.raises(ValueError, match="embeddings contains 1 NaN"):
        loss(embeddings, labels)
    pairloss.set_checks(False)
    try:
        assert not pairloss.checks_enabled()
        assert torch.isnan(loss(embeddings, labels))  # not caught: the NaN propagates
        with pairloss.checks(True):
            assert pairloss.checks_enabled()
            with pytest.raises(ValueError, match="NaN"):
                loss(embeddings, labels)
    finally:
        pairloss.set_checks(True)
    assert pairloss.checks_enabled()
    with pytest.raises(ValueError, match="enabled must be a bool"):
        pairloss.set_checks(0)  # type: ignore[arg-type]


def test_reference_set_checked_in_the_same_read_back() -> None:
    embeddings, labels = _batch()
    reference = embeddings.clone()
    reference[0, 0] = float("inf")
    with pytest.raises(ValueError, match="ref_emb contains 1 NaN or infinite"):
        pairloss.ContrastiveLoss()(embeddings, labels, ref_emb=reference, ref_labels=labels)


def test_settings_read_as_constants_under_compile() -> None:
    """The memory budget (a ContextVar the tracer cannot follow) is read once while tracing, as a constant."""
    torch._dynamo.reset()

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x * pairloss.get_memory_budget()

    compiled = torch.compile(scaled, fullgraph=True, backend="aot_eager")
    with pairloss.memory_budget(12345):
        assert float(compiled(torch.ones(()))) == 12345.0


def test_import_does_not_load_the_compiler() -> None:
    import subprocess
    import sys

    code = "import sys, pairloss; print('torch._dynamo' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
