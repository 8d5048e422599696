"""Multi-marginal Sinkhorn: against POT for k = 2, a loop reference, marginals, duality and the ε → 0 limit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import ot as pot
import pytest
import torch
from scipy.optimize import linprog

from pairloss.losses.ot import (
    check_tensor_size,
    multimarginal_sinkhorn,
    pairwise_cost_tensor,
    pairwise_pairs,
    sum_of_pairwise_costs,
)


def reference_sinkhorn(cost: np.ndarray, weights: list[np.ndarray], eps: float, sweeps: int) -> tuple[float, list]:
    """Multi-marginal Sinkhorn written tuple by tuple: f_l(i) = −ε log Σ_{t: t_l=i} e^{(Σ_{m≠l} f_m − C_t)/ε} Π a_m."""
    k = cost.ndim
    tuples = list(itertools.product(*[range(n) for n in cost.shape]))
    f = [np.zeros(n) for n in cost.shape]
    for _ in range(sweeps):
        for l in range(k):
            for i in range(cost.shape[l]):
                total = 0.0
                for t in tuples:
                    if t[l] != i:
                        continue
                    others = sum(f[m][t[m]] for m in range(k) if m != l)
                    mass = math.prod(weights[m][t[m]] for m in range(k) if m != l)
                    total += math.exp((others - cost[t]) / eps) * mass
                f[l][i] = -eps * math.log(total)
    value = sum(float(np.dot(fl, a)) for fl, a in zip(f, weights))
    return value, f


def lp_value(cost: np.ndarray) -> float:
    """Unregularised multi-marginal OT with uniform marginals, as a linear program over the n^k tuples."""
    k, n = cost.ndim, cost.shape[0]
    rows = []
    for l in range(k):
        for i in range(n):
            mask = np.zeros(cost.shape)
            index = [slice(None)] * k
            index[l] = i
            mask[tuple(index)] = 1
            rows.append(mask.ravel())
    res = linprog(cost.ravel(), A_eq=np.array(rows), b_eq=np.full(k * n, 1 / n), bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def assignment_value(cost: np.ndarray) -> float:
    """The best multi-marginal assignment for k = 3: min over permutations σ, τ of mean_i C[i, σ(i), τ(i)]."""
    n = cost.shape[0]
    ids = np.arange(n)
    perms = [np.array(p) for p in itertools.permutations(range(n))]
    return min(float(cost[ids, s, t].mean()) for s in perms for t in perms)


def random_points(k: int, n: int, d: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(k)]


def test_k2_matches_pot_sinkhorn2() -> None:
    x, y = random_points(2, 7, seed=1)[0], random_points(2, 9, seed=2)[1]
    cost = sum_of_pairwise_costs([x, y])
    a = torch.rand(7, dtype=torch.float64) + 0.1
    a /= a.sum()
    b = np.full(9, 1 / 9)
    result = multimarginal_sinkhorn(cost, [a, None], epsilon=0.5, tol=1e-12, max_iter=20000, check_every=1)
    expected = pot.sinkhorn2(a.numpy(), b, cost.numpy(), 0.5, stopThr=1e-14, numItermax=200000)
    assert result.converged
    assert float(result.transport_cost()) == pytest.approx(float(expected), abs=1e-6)
    plan = pot.sinkhorn(a.numpy(), b, cost.numpy(), 0.5, stopThr=1e-14, numItermax=200000)
    np.testing.assert_allclose(result.coupling().numpy(), plan, atol=1e-8)


def test_matches_tuple_loop_reference_with_weights() -> None:
    points = random_points(3, 3, seed=3)
    cost = sum_of_pairwise_costs(points)
    g = torch.Generator().manual_seed(4)
    weights = []
    for _ in range(3):
        w = torch.rand(3, generator=g, dtype=torch.float64) + 0.2
        weights.append(w / w.sum())
    result = multimarginal_sinkhorn(cost, weights, epsilon=2.0, tol=1e-12, max_iter=5000, check_every=1)
    value, f = reference_sinkhorn(cost.numpy(), [w.numpy() for w in weights], 2.0, 300)
    assert float(result.value) == pytest.approx(value, abs=1e-8)
    for mine, ref in zip(result.potentials, f):
        # potentials are unique up to constants that sum to zero; compare after centring
        np.testing.assert_allclose((mine - mine.mean()).numpy(), ref - ref.mean(), atol=1e-7)


def test_sum_of_pairwise_costs_is_the_loop_definition() -> None:
    points = random_points(4, 3, seed=5)
    cost = sum_of_pairwise_costs(points)
    for t in itertools.product(range(3), repeat=4):
        expected = sum(float(((points[l][t[l]] - points[m][t[m]]) ** 2).sum()) for l, m in pairwise_pairs(4))
        assert float(cost[t]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("k", "n"), [(3, 6), (4, 5), (5, 4), (6, 3)])
def test_marginals_within_tolerance(k: int, n: int) -> None:
    cost = sum_of_pairwise_costs(random_points(k, n, seed=k))
    for tol in (1e-3, 1e-7):
        result = multimarginal_sinkhorn(cost, relative_epsilon=0.1, tol=tol, max_iter=20000, check_every=1)
        assert result.converged
        errors = sum(float((m - 1 / n).abs().sum()) for m in result.marginals())
        assert errors < tol
        assert errors == pytest.approx(result.marginal_error, rel=1e-6, abs=1e-12)
        assert float(result.coupling().sum()) == pytest.approx(1.0, abs=1e-9)


def test_primal_equals_dual_and_relative_epsilon() -> None:
    cost = sum_of_pairwise_costs(random_points(3, 5, seed=6))
    result = multimarginal_sinkhorn(cost, relative_epsilon=0.2, tol=1e-11, max_iter=20000, check_every=1)
    assert result.epsilon == pytest.approx(0.2 * float(cost.std(correction=0)))  # population std, as OTT-JAX
    assert float(result.primal_value()) == pytest.approx(float(result.value), abs=1e-8)


def test_danskin_gradient_of_value_is_the_coupling() -> None:
    cost = sum_of_pairwise_costs(random_points(3, 3, seed=7))
    cost = cost / cost.std()

    def solve(c: torch.Tensor) -> float:
        return float(multimarginal_sinkhorn(c, epsilon=0.5, tol=1e-13, max_iter=50000, check_every=1).value)

    coupling = multimarginal_sinkhorn(cost, epsilon=0.5, tol=1e-13, max_iter=50000, check_every=1).coupling()
    h = 1e-6
    for index in [(0, 0, 0), (1, 2, 0), (2, 1, 1)]:
        up, down = cost.clone(), cost.clone()
        up[index] += h
        down[index] -= h
        assert (solve(up) - solve(down)) / (2 * h) == pytest.approx(float(coupling[index]), abs=1e-7)


@pytest.mark.parametrize("seed", [11, 18])
def test_epsilon_to_zero_reaches_the_assignment(seed: int) -> None:
    n, k = 4, 3
    cost = sum_of_pairwise_costs(random_points(k, n, seed=seed))
    cost = cost / cost.std()
    exact = lp_value(cost.numpy())
    assert exact <= assignment_value(cost.numpy()) + 1e-9  # the LP relaxes the assignment
    assert exact == pytest.approx(assignment_value(cost.numpy()), abs=1e-9)  # and is tight on these instances
    previous = math.inf
    for eps in (0.5, 0.1, 0.05):
        value = float(multimarginal_sinkhorn(cost, epsilon=eps, tol=1e-9, max_iter=5000, check_every=10).value)
        assert exact - 1e-7 <= value <= exact + eps * (k - 1) * math.log(n) + 1e-7
        assert value <= previous + 1e-9
        previous = value


def test_float32_and_large_cost_range_stay_finite() -> None:
    cost = (100 * sum_of_pairwise_costs(random_points(3, 8, seed=8))).float()
    result = multimarginal_sinkhorn(cost, relative_epsilon=0.05, tol=1e-3, max_iter=5000)
    assert result.converged
    assert math.isfinite(float(result.value))
    assert bool(torch.isfinite(result.coupling()).all())


def test_pairwise_cost_tensor_shape_errors() -> None:
    with pytest.raises(ValueError, match="need 3 pairwise cost matrices"):
        pairwise_cost_tensor([torch.zeros(2, 2)], [2, 2, 2])
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\)"):
        pairwise_cost_tensor([torch.zeros(2, 2)], [2, 3])


def test_input_errors() -> None:
    cost = torch.rand(3, 3, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        multimarginal_sinkhorn(torch.rand(4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        multimarginal_sinkhorn(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="floating-point"):
        multimarginal_sinkhorn(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2 weight vectors"):
        multimarginal_sinkhorn(cost, [None, None])
    with pytest.raises(ValueError, match="sum to 1"):
        multimarginal_sinkhorn(cost, [torch.ones(3), None, None])
    with pytest.raises(ValueError, match="has 2 entries"):
        multimarginal_sinkhorn(cost, [torch.full((2,), 0.5), None, None])
    with pytest.raises(ValueError, match="not both"):
        multimarginal_sinkhorn(cost, epsilon=0.1, relative_epsilon=0.1)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        multimarginal_sinkhorn(cost, epsilon=-1.0)
    with pytest.raises(ValueError, match="at least 2 point clouds"):
        sum_of_pairwise_costs([torch.zeros(3, 2)])
    with pytest.raises(ValueError, match="features"):
        sum_of_pairwise_costs([torch.zeros(3, 2), torch.zeros(3, 4)])


def test_memory_budget_error_says_what_is_needed() -> None:
    with pytest.raises(ValueError, match=r"64 × 64 × 64 × 64 × 64 × 64 has 68,719,476,736 entries.*1.0 TiB"):
        check_tensor_size([64] * 6, torch.float32, 8 * 2**30)
    assert check_tensor_size([128] * 4, torch.float32, 8 * 2**30) == 128**4
    with pytest.raises(ValueError, match="beyond the memory budget"):
        multimarginal_sinkhorn(torch.rand(4, 4, 4), memory_budget=1000)


@pytest.mark.parametrize("single_thread_entries", [2**26, 0])
def test_small_cpu_solves_run_on_one_thread_and_restore_the_setting(
    monkeypatch: pytest.MonkeyPatch, single_thread_entries: int
) -> None:
    import pairloss.losses.ot as ot_module

    seen: list[int] = []
    contract = ot_module._contract_last

    def recording(kernel: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return contract(kernel, scaling)

    monkeypatch.setattr(ot_module, "_contract_last", recording)
    monkeypatch.setattr(ot_module, "SINGLE_THREAD_ENTRIES", single_thread_entries)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cost = sum_of_pairwise_costs(random_points(3, 6, seed=9))
        result = multimarginal_sinkhorn(cost, relative_epsilon=0.1, tol=1e-9, max_iter=5000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert set(seen) == ({1} if single_thread_entries else {2})
    assert result.converged
