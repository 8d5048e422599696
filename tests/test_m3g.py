"""M3G and the multi-view InfoNCE baselines: loop references, the gap's sign and limit, gradients, edge cases."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pairloss import functional
from pairloss.data.multiview import synthetic_multiview
from pairloss.losses import (
    AverageOfRestInfoNCELoss,
    M3GLoss,
    PairwiseInfoNCELoss,
    registered_losses,
)
from pairloss.losses.multiview import average_of_rest_infonce_loss, m3g_loss, pairwise_infonce_loss
from pairloss.recipes import run_experiment
from pairloss.recipes.m3g import RECIPE, cross_view_recall_at_1, linear_probe_accuracy

TIGHT = {"tol": 1e-12, "max_iter": 200000, "check_every": 1}


def views(k: int, n: int, d: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, d, generator=g, dtype=dtype)


def cv_cost_tensor(z: torch.Tensor) -> np.ndarray:
    """Circular variance 1 − ‖(1/k) Σ_l z_l[t_l]‖² of every tuple t, one tuple at a time."""
    z = F.normalize(z, dim=-1)
    k, n, _ = z.shape
    cost = np.zeros([n] * k)
    for t in itertools.product(range(n), repeat=k):
        mean = sum(z[l, t[l]] for l in range(k)) / k
        cost[t] = 1.0 - float((mean**2).sum())
    return cost


def reference_entropic_ot(cost: np.ndarray, eps: float, sweeps: int) -> float:
    """Uniform-marginal entropic multi-marginal OT by tuple-wise Sinkhorn (KL to the product measure)."""
    k, n = cost.ndim, cost.shape[0]
    tuples = list(itertools.product(range(n), repeat=k))
    f = [np.zeros(n) for _ in range(k)]
    for _ in range(sweeps):
        for l in range(k):
            for i in range(n):
                total = sum(
                    math.exp((sum(f[m][t[m]] for m in range(k) if m != l) - cost[t]) / eps) / n ** (k - 1)
                    for t in tuples
                    if t[l] == i
                )
                f[l][i] = -eps * math.log(total)
    return float(sum(fl.mean() for fl in f))


def reference_infonce(q: torch.Tensor, r: torch.Tensor, tau: float) -> float:
    """mean_i [−s_ii/τ + log Σ_j exp(s_ij/τ)] with cosine similarities, loop over anchors."""
    q, r = F.normalize(q, dim=-1), F.normalize(r, dim=-1)
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ r[j]) / tau for j in range(r.shape[0])]
        total += -logits[i] + math.log(sum(math.exp(s) for s in logits))
    return total / q.shape[0]


def test_m3g_matches_loop_reference_and_cv_identity() -> None:
    z = views(3, 3, seed=1)
    k, n = 3, 3
    cost = cv_cost_tensor(z)
    eps = 0.05
    expected_ot = reference_entropic_ot(cost, eps, 400)
    ground_truth = float(np.mean([cost[i, i, i] for i in range(n)]))
    expected = ground_truth + eps * (k - 1) * math.log(n) - expected_ot
    assert float(m3g_loss(z, epsilon=eps, **TIGHT)) == pytest.approx(expected, abs=1e-8)


def test_sqeuclidean_and_callable_costs_agree() -> None:
    z = views(3, 4, seed=2)
    sq = m3g_loss(z, cost="sqeuclidean", epsilon=0.5, **TIGHT)
    custom = m3g_loss(z, cost=lambda x, y: torch.cdist(x, y) ** 2, epsilon=0.5, **TIGHT)
    assert float(sq) == pytest.approx(float(custom), abs=1e-8)
    # the circular variance is the squared-Euclidean cost divided by k², with ε scaled alike
    cv = m3g_loss(z, epsilon=0.5 / 9, **TIGHT)
    assert float(cv) == pytest.approx(float(sq) / 9, abs=1e-8)


@pytest.mark.parametrize(("k", "n"), [(2, 6), (3, 5), (4, 4), (5, 3), (6, 3)])
def test_gap_is_nonnegative(k: int, n: int) -> None:
    for seed in range(3):
        for rel in (0.01, 0.1, 1.0, 10.0):
            # the dual value after any number of sweeps is ≤ OT_ε, so the gap is ≥ 0 even before convergence
            z = views(k, n, seed=seed)
            gap = m3g_loss(z, relative_epsilon=rel, tol=1e-9, max_iter=200, check_every=10)
            assert float(gap) >= -1e-9
    aligned = views(1, n, seed=9).expand(k, n, 4)  # identical views: the ground truth is optimal
    assert float(m3g_loss(aligned, epsilon=1e-3, tol=1e-9, max_iter=2000)) < 1e-2


@pytest.mark.parametrize("seed", [20, 22])
def test_gap_tends_to_the_brute_force_assignment_gap(seed: int) -> None:
    k, n = 3, 4
    z = views(k, n, seed=seed)
    cost = cv_cost_tensor(z)
    ids = np.arange(n)
    perms = [np.array(p) for p in itertools.permutations(range(n))]
    best = min(float(cost[ids, s, t].mean()) for s in perms for t in perms)
    exact_gap = float(cost[ids, ids, ids].mean()) - best
    previous = math.inf
    for relative in (2.0, 0.5, 0.1):
        eps = relative * float(cost.std())
        gap = float(m3g_loss(z, epsilon=eps, tol=1e-8, max_iter=3000, check_every=10))
        # OT_0 ≤ OT_ε ≤ OT_0 + ε(k−1)log n, hence exact_gap ≤ gap_ε ≤ exact_gap + ε(k−1)log n
        assert exact_gap - 1e-7 <= gap <= exact_gap + eps * (k - 1) * math.log(n) + 1e-7
        assert gap <= previous + 1e-9
        previous = gap


@pytest.mark.parametrize("cost", ["circular_variance", "sqeuclidean"])
def test_danskin_gradient_matches_finite_differences(cost: str) -> None:
    z = views(3, 3, d=3, seed=3).requires_grad_(True)
    eps = 0.1 if cost == "circular_variance" else 1.0  # about half the std of either cost tensor
    assert torch.autograd.gradcheck(lambda v: m3g_loss(v, cost=cost, epsilon=eps, **TIGHT), (z,), atol=1e-6)


def test_gradient_with_four_views() -> None:
    z = views(4, 3, d=2, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: m3g_loss(v, epsilon=0.1, **TIGHT), (z,), atol=1e-6)


def test_single_object_is_zero_with_zero_gradient() -> None:
    z = views(3, 1, seed=5).requires_grad_(True)
    for loss in (m3g_loss(z), pairwise_infonce_loss(z), average_of_rest_infonce_loss(z)):
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
        (grad,) = torch.autograd.grad(loss, z)
        assert bool(torch.isfinite(grad).all())
        assert float(grad.abs().max()) < 1e-10


def test_module_matches_functional_and_reports_solve() -> None:
    z = views(3, 5, seed=6, dtype=torch.float32)
    module = M3GLoss(relative_epsilon=0.1)
    assert float(module(z)) == pytest.approx(float(functional.m3g_loss(z, relative_epsilon=0.1)), abs=1e-6)
    assert module.last_solve is not None and module.last_solve.iterations >= 1
    assert module.last_solve.marginal_error < 1e-3
    assert module(list(z)).dtype == torch.float32


def test_pairwise_infonce_matches_loops() -> None:
    z = views(3, 5, seed=7)
    pairs = [(l, m) for l in range(3) for m in range(3) if l != m]
    expected = np.mean([reference_infonce(z[l], z[m], 0.2) for l, m in pairs])
    assert float(pairwise_infonce_loss(z, temperature=0.2)) == pytest.approx(expected, abs=1e-10)
    assert float(PairwiseInfoNCELoss(0.2)(z)) == pytest.approx(expected, abs=1e-10)


def test_average_of_rest_matches_loops() -> None:
    z = views(4, 5, seed=8)
    zn = F.normalize(z, dim=-1)
    terms = []
    for l in range(4):
        rest = sum(zn[m] for m in range(4) if m != l) / 3
        terms += [reference_infonce(z[l], rest, 0.1), reference_infonce(rest, z[l], 0.1)]
    assert float(average_of_rest_infonce_loss(z)) == pytest.approx(np.mean(terms), abs=1e-10)
    assert float(AverageOfRestInfoNCELoss()(z)) == pytest.approx(np.mean(terms), abs=1e-10)


def test_baseline_gradients() -> None:
    z = views(3, 4, d=3, seed=9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: pairwise_infonce_loss(v, temperature=0.5), (z,))
    assert torch.autograd.gradcheck(lambda v: average_of_rest_infonce_loss(v, temperature=0.5), (z,))


@pytest.mark.parametrize("loss", [m3g_loss, pairwise_infonce_loss, average_of_rest_infonce_loss])
def test_input_errors(loss) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="k >= 2"):
        loss(torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="3 dimensions"):
        loss(torch.randn(4, 3))
    with pytest.raises(ValueError, match="same shape"):
        loss([torch.randn(4, 3), torch.randn(5, 3)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        loss(torch.tensor([[[0.0, float("inf")]], [[1.0, 0.0]]]))
    with pytest.raises(ValueError, match="floating-point"):
        loss(torch.ones(2, 3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.randn(3, 0, 2))


def test_m3g_specific_errors() -> None:
    with pytest.raises(ValueError, match=r"needs about 1.0 TiB"):
        m3g_loss(torch.randn(6, 64, 8))
    with pytest.raises(ValueError, match="cost must be one of"):
        M3GLoss(cost="cosine")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        PairwiseInfoNCELoss(temperature=0.0)


def test_registered() -> None:
    losses = registered_losses()
    for name in ("M3GLoss", "PairwiseInfoNCELoss", "AverageOfRestInfoNCELoss"):
        assert losses[name].family == "multiview"
        assert losses[name].paper


def test_synthetic_multiview_data() -> None:
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = synthetic_multiview(50, 4, generator=g1, noise=0.0)
    b = synthetic_multiview(50, 4, generator=g2, noise=0.0)
    assert a.views.shape == (4, 50, 32) and a.labels.shape == (50,) and a.latent.shape == (50, 8)
    assert torch.equal(a.views, b.views)
    assert len(a.subset(torch.arange(10))) == 10
    assert int(a.labels.min()) >= 0 and int(a.labels.max()) < 10
    noisy = synthetic_multiview(50, 4, generator=torch.Generator().manual_seed(0), noise=0.3)
    assert torch.equal(noisy.latent, a.latent) and not torch.equal(noisy.views, a.views)
    with pytest.raises(ValueError, match="n_objects"):
        synthetic_multiview(0, 3)


def test_cross_view_recall_matches_a_loop() -> None:
    z = views(3, 7, seed=11, dtype=torch.float32)
    zn = F.normalize(z, dim=-1)
    hits = []
    for l in range(3):
        for m in range(3):
            if l != m:
                for i in range(7):
                    sims = [float(zn[l, i] @ zn[m, j]) for j in range(7)]
                    hits.append(float(int(np.argmax(sims)) == i))
    assert cross_view_recall_at_1(z) == pytest.approx(np.mean(hits))
    aligned = views(1, 7, seed=12, dtype=torch.float32).expand(3, 7, 4)
    assert cross_view_recall_at_1(aligned) == 1.0


def test_linear_probe_separates_separable_classes() -> None:
    labels = torch.arange(40) % 2
    z = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    z[:, :, 0] += labels * 2.0 - 1.0
    assert linear_probe_accuracy(z, labels, z, labels) == 1.0


TINY = {
    "trials": 1,
    "fit_objects": 60,
    "validation_objects": 30,
    "test_objects": 30,
    "batch_sizes": {"3": 6, "4": 4},
    "updates": 4,
    "validate_every": 2,
}


def test_recipe_quick_run_writes_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick" and saved["seeds"] == [0, 1]
    rows = saved["summary"]
    assert set(rows) == {
        f"{loss}, k={k}" for loss in ("M3G", "pairwise InfoNCE", "average-of-rest InfoNCE") for k in (3, 4)
    }
    for row in rows.values():
        for metric in ("cross-view R@1", "probe accuracy"):
            assert 0.0 <= row[metric]["mean"] <= 1.0
    for k in (3, 4):
        solve = rows[f"M3G, k={k}"]
        assert solve["sweeps (last update)"]["mean"] >= 1
        assert solve["marginal error (last update)"]["mean"] < RECIPE.config["tol"]
        assert solve["updates at the sweep cap"]["mean"] == 0
    assert {v["claim"] for v in saved["verdicts"]} == {
        f"M3G beats {b}, k={k}" for b in ("pairwise InfoNCE", "average-of-rest InfoNCE") for k in (3, 4)
    }
    assert set(saved["tuning"]) == set(rows)
    assert saved["tuning"]["M3G, k=3"]["space"] == {
        "relative_epsilon": {"type": "float", "low": 0.15, "high": 3.0, "log": True}
    }


@pytest.mark.slow
def test_recipe_quick_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_experiment(RECIPE, out=tmp_path, quick=True)
    assert len(result.verdicts) == 8
