"""Entropic multi-marginal optimal transport: the log-domain multi-marginal Sinkhorn algorithm.

Given ``k`` marginals ``a_1, ..., a_k`` (probability vectors of sizes ``n_1, ..., n_k``) and a cost tensor
``C[i_1, ..., i_k]``, the entropic multi-marginal OT problem is

    OT_ε(C) = min_{P ∈ Π(a_1, ..., a_k)} ⟨P, C⟩ + ε KL(P ‖ a_1 ⊗ ... ⊗ a_k)

whose dual is solved by block coordinate ascent on potentials ``f_1, ..., f_k`` (Benamou, Carlier, Cuturi,
Nenna, Peyré, SIAM J. Sci. Comput. 2015; Piran, Klein, Thornton, Cuturi, ICML 2024, Algorithm 1):

    P = exp((f_1 ⊕ ... ⊕ f_k − C) / ε) · (a_1 ⊗ ... ⊗ a_k)
    f_l ← f_l + ε (log a_l − log P_l)          (P_l the l-th marginal of P, a log-sum-exp over the other axes)

At the optimum ``OT_ε(C) = Σ_l ⟨f_l, a_l⟩`` and, by Danskin's theorem, ``∂OT_ε/∂C = P``.

With the KL to the product measure, ``0 ≤ KL(P ‖ ⊗a) ≤ Σ_l H(a_l) − max_l H(a_l)`` for every coupling, so
``OT_0 ≤ OT_ε ≤ OT_0 + ε (Σ_l H(a_l) − max_l H(a_l))`` (``ε (k − 1) log n`` for uniform weights).
Libraries that regularise with the negative entropy ``−H(P)`` instead (POT, OTT-JAX) report
``OT_ε − ε Σ_l H(a_l)``; the coupling is the same.

Memory: the solver holds the cost tensor, the log-coupling and the temporaries of one log-sum-exp, about four
tensors of ``n_1 ⋯ n_k`` entries. At float32 that is 1 GiB for ``n = 128, k = 4`` (268M entries), and 275 GB
for ``n = 64, k = 6`` (69G entries), which no CPU here holds: :func:`check_tensor_size` refuses such problems
before allocating anything and says how much they would need.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from pairloss import memory
from pairloss._validation import check_floating, check_positive, check_tensor

__all__ = [
    "DEFAULT_OT_MEMORY_BUDGET",
    "MultiMarginalResult",
    "check_tensor_size",
    "multimarginal_sinkhorn",
    "pairwise_cost_tensor",
    "pairwise_pairs",
    "sum_of_pairwise_costs",
]

#: The default memory budget of a solve: the library's shared budget (:func:`pairloss.memory.get_memory_budget`,
#: set with :func:`pairloss.set_memory_budget`), read when the solve starts. The solve cannot run in blocks, so a
#: problem beyond it is refused.
DEFAULT_OT_MEMORY_BUDGET: Literal["shared"] = "shared"

OTBudget = int | Literal["shared"] | None

#: Tensors of ``n_1 ⋯ n_k`` entries alive at once during a solve (cost, log-coupling, two temporaries).
WORKING_COPIES = 4

#: On a CPU, a solve whose tensor has at most this many entries runs on one thread. Each sweep is two
#: memory-bound matrix-vector passes, which a second thread speeds up little, while every pass of a multi-threaded
#: solve waits for its slowest thread: with another process on a core, each pass costs a scheduler slice (measured
#: on 2 shared cores: n = 32, k = 4 took 8.9 s on 2 threads and 0.49 s on one). Set to 0 to keep torch's setting.
SINGLE_THREAD_ENTRIES = 2**26


def _format_bytes(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def check_tensor_size(shape: Sequence[int], dtype: torch.dtype, memory_budget: OTBudget) -> int:
    """Check that a multi-marginal problem of ``shape`` fits ``memory_budget`` bytes; return its entry count.

    The solver needs about ``WORKING_COPIES × n_1 ⋯ n_k × itemsize`` bytes; ``memory_budget="shared"`` reads the
    shared budget (:mod:`pairloss.memory`), ``None`` disables the check. Raises ``ValueError`` saying how much
    memory the problem would need otherwise.
    """
    entries = math.prod(int(n) for n in shape)
    if memory_budget is None:
        return entries
    if memory_budget == DEFAULT_OT_MEMORY_BUDGET:
        memory_budget = memory.get_memory_budget()
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = WORKING_COPIES * entries * itemsize
    if needed > memory_budget:
        dims = " × ".join(str(int(n)) for n in shape)
        raise ValueError(
            f"a multi-marginal problem of shape {dims} has {entries:,} entries and needs about "
            f"{_format_bytes(needed)} ({WORKING_COPIES} tensors of {dtype}), beyond the memory budget of "
            f"{_format_bytes(memory_budget)}; use fewer views or a smaller batch, or raise the budget "
            "(pairloss.set_memory_budget)"
        )
    return entries


def pairwise_pairs(k: int) -> list[tuple[int, int]]:
    """The ``k(k−1)/2`` index pairs ``(l, m)``, ``l < m``, in the order the pairwise costs are stacked."""
    return list(itertools.combinations(range(k), 2))


@contextmanager
def _one_cpu_thread(entries: int, device: torch.device) -> Iterator[None]:
    """One CPU thread for work on at most :data:`SINGLE_THREAD_ENTRIES` entries; torch's setting otherwise."""
    before = torch.get_num_threads()
    if device.type != "cpu" or entries > SINGLE_THREAD_ENTRIES or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pairwise_cost_tensor(pairwise: Sequence[Tensor], sizes: Sequence[int]) -> Tensor:
    """The cost tensor ``C[i_1..i_k] = Σ_{l<m} c_lm[i_l, i_m]`` built by broadcasting ``k(k−1)/2`` matrices.

    ``pairwise`` lists ``c_lm`` (shape ``[n_l, n_m]``) in the order of :func:`pairwise_pairs`. Only the output
    tensor is materialised: each matrix is viewed with singleton axes and added in place.
    """
    k = len(sizes)
    pairs = pairwise_pairs(k)
    if len(pairwise) != len(pairs):
        raise ValueError(f"{k} marginals need {len(pairs)} pairwise cost matrices, got {len(pairwise)}")
    for (l, m), matrix in zip(pairs, pairwise, strict=True):
        if tuple(matrix.shape) != (sizes[l], sizes[m]):
            raise ValueError(
                f"pairwise cost ({l}, {m}) must have shape {(sizes[l], sizes[m])}, got {tuple(matrix.shape)}"
            )
    first = pairwise[0]
    with _one_cpu_thread(math.prod(sizes), first.device):
        cost = torch.zeros(tuple(sizes), dtype=first.dtype, device=first.device)
        for (l, m), matrix in zip(pairs, pairwise, strict=True):
            view = [1] * k
            view[l], view[m] = sizes[l], sizes[m]
            cost += matrix.reshape(view)
    return cost


def sum_of_pairwise_costs(
    points: Sequence[Tensor],
    cost_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    memory_budget: OTBudget = DEFAULT_OT_MEMORY_BUDGET,
) -> Tensor:
    """The cost tensor of ``k`` point clouds: ``C[i_1..i_k] = Σ_{l<m} c(x_l[i_l], x_m[i_m])``.

    ``points`` are ``k`` matrices ``[n_l, d]``; ``cost_fn(x, y)`` returns the ``[n_x, n_y]`` cost matrix
    (squared Euclidean distance by default). Raises ``ValueError`` when the tensor would not fit
    ``memory_budget``.
    """
    if len(points) < 2:
        raise ValueError(f"multi-marginal OT needs at least 2 point clouds, got {len(points)}")
    for l, x in enumerate(points):
        check_floating(x, f"points[{l}]", ndim=2)
        if x.shape[1] != points[0].shape[1]:
            raise ValueError(f"points[{l}] has {x.shape[1]} features but points[0] has {points[0].shape[1]}")
    sizes = [int(x.shape[0]) for x in points]
    check_tensor_size(sizes, points[0].dtype, memory_budget)
    fn = cost_fn if cost_fn is not None else (lambda x, y: torch.cdist(x, y).square())
    return pairwise_cost_tensor([fn(points[l], points[m]) for l, m in pairwise_pairs(len(points))], sizes)


@dataclass
class MultiMarginalResult:
    """What :func:`multimarginal_sinkhorn` returns.

    Attributes:
        potentials: the ``k`` dual potentials ``f_l`` (``[n_l]`` each), in cost units.
        value: the regularised cost ``OT_ε(C) = Σ_l ⟨f_l, a_l⟩`` (KL to the product of the marginals).
        epsilon: the absolute regularisation used.
        iterations: full sweeps over the ``k`` marginals that were run.
        marginal_error: ``Σ_l ‖P_l − a_l‖₁`` at the last check.
        converged: whether ``marginal_error < tol``.
        errors: the marginal error after each check.
        weights: the marginals ``a_l``.
        log_coupling: ``log P`` (the ``n_1 × ... × n_k`` tensor the solver iterated on).
        cost: the cost tensor ``C``.
        plan: the coupling ``P = exp(log P)``.
    """

    potentials: list[Tensor]
    value: Tensor
    epsilon: float
    iterations: int
    marginal_error: float
    converged: bool
    errors: list[float]
    weights: list[Tensor]
    log_coupling: Tensor = field(repr=False)
    cost: Tensor = field(repr=False)
    plan: Tensor = field(repr=False)

    def coupling(self) -> Tensor:
        """The coupling ``P`` (the ``n_1 × ... × n_k`` tensor)."""
        return self.plan

    def marginals(self) -> list[Tensor]:
        """The ``k`` marginals of the coupling."""
        coupling = self.coupling()
        k = coupling.ndim
        return [coupling.sum(dim=tuple(d for d in range(k) if d != l)) for l in range(k)]

    def bimarginals(self) -> list[Tensor]:
        """The two-view marginals ``P_lm`` (``[n_l, n_m]``) for every pair of :func:`pairwise_pairs`.

        They are the gradient of ``OT_ε`` with respect to each pairwise cost matrix of a sum-of-pairs cost.
        """
        coupling = self.coupling()
        k = coupling.ndim
        with _one_cpu_thread(coupling.numel(), coupling.device):
            return [coupling.sum(dim=tuple(d for d in range(k) if d not in (l, m))) for l, m in pairwise_pairs(k)]

    def transport_cost(self) -> Tensor:
        """The linear part ``⟨P, C⟩`` (what POT's ``sinkhorn2`` returns)."""
        return (self.coupling() * self.cost).sum()

    def primal_value(self) -> Tensor:
        """``⟨P, C⟩ + ε KL(P ‖ ⊗a)`` evaluated on the returned coupling (equals ``value`` at convergence)."""
        log_product = _outer_sum([w.log() for w in self.weights])
        coupling = self.coupling()
        kl = torch.where(coupling > 0, coupling * (self.log_coupling - log_product), 0.0).sum()
        return (coupling * self.cost).sum() + self.epsilon * kl


def _outer_sum(vectors: Sequence[Tensor]) -> Tensor:
    """``v_1 ⊕ ... ⊕ v_k`` as a full tensor (used only for small diagnostics)."""
    k = len(vectors)
    total = torch.zeros((), dtype=vectors[0].dtype, device=vectors[0].device)
    for l, v in enumerate(vectors):
        view = [1] * k
        view[l] = v.shape[0]
        total = total + v.reshape(view)
    return total


def _check_weights(weights: Sequence[Tensor | None] | None, cost: Tensor) -> list[Tensor]:
    k = cost.ndim
    if weights is None:
        weights = [None] * k
    if len(weights) != k:
        raise ValueError(f"the cost tensor has {k} marginals but {len(weights)} weight vectors were given")
    checked: list[Tensor] = []
    for l, w in enumerate(weights):
        n = cost.shape[l]
        if w is None:
            checked.append(torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device))
            continue
        check_floating(w, f"weights[{l}]", ndim=1)
        if w.shape[0] != n:
            raise ValueError(f"weights[{l}] has {w.shape[0]} entries but axis {l} of the cost has {n}")
        if bool((w <= 0).any()):
            raise ValueError(f"weights[{l}] must be positive")
        if abs(float(w.sum()) - 1.0) > 1e-5:
            raise ValueError(f"weights[{l}] must sum to 1, got {float(w.sum()):.6g}")
        checked.append(w.to(dtype=cost.dtype, device=cost.device))
    return checked


def _kron(vectors: Sequence[Tensor], like: Tensor) -> Tensor:
    """The flattened outer product of ``vectors`` (a 1-element tensor when there are none)."""
    out = torch.ones(1, dtype=like.dtype, device=like.device)
    for v in vectors:
        out = torch.outer(out, v).reshape(-1)
    return out


class _NonFiniteScaling(ArithmeticError):
    """A scaling update overflowed: the kernel has to be refreshed from the log-coupling."""


def _scale(u: list[Tensor], a: Sequence[Tensor], l: int, contracted: Tensor) -> Tensor:
    """``u_l ← a_l / r_l`` with ``r_l`` the kernel contracted with every other scaling; returns ``r_l``."""
    scaling = a[l] / contracted
    if not math.isfinite(float(scaling.sum())):  # the scalings are positive: the sum is finite iff each one is
        raise _NonFiniteScaling
    u[l] = scaling
    return contracted


def _contract_last(kernel: Tensor, scaling: Tensor) -> Tensor:
    """``Σ_{i_m} K[..., i_m] u[i_m]``: the kernel with its last axis contracted (one matrix-vector pass)."""
    return (kernel.reshape(-1, kernel.shape[-1]) @ scaling).reshape(kernel.shape[:-1])


def _kernel_sweep(kernel: Tensor, u: list[Tensor], a: Sequence[Tensor], head: Tensor | None = None) -> Tensor:
    """One Gauss–Seidel sweep ``u_0, ..., u_{m−1}`` on a kernel over the first ``m`` axes; returns ``r_{m−1}``.

    Two passes over the kernel whatever ``m``: ``head`` = the kernel with its last axis contracted (given when the
    caller already has it), the same sweep on ``head`` for the first ``m − 1`` scalings (a tensor ``n_{m−1}``
    times smaller), then the kernel contracted with the updated ``u_0 ⊗ ... ⊗ u_{m−2}`` for the last one. The
    updates are those of the textbook sweep (each ``u_l`` sees the scalings updated before it), in ``⌈·⌉ 2`` passes
    instead of ``m``.
    """
    m = kernel.ndim
    if m == 1:
        return _scale(u, a, 0, kernel)
    _kernel_sweep(_contract_last(kernel, u[m - 1]) if head is None else head, u, a)
    lead = _kron(u[: m - 1], kernel)
    return _scale(u, a, m - 1, lead @ kernel.reshape(lead.shape[0], kernel.shape[-1]))


def _head_marginal_error(head: Tensor, u: Sequence[Tensor], a: Sequence[Tensor]) -> float:
    """``Σ_{l<k−1} ‖P_l − a_l‖₁`` from ``head`` (the kernel with its last axis contracted with ``u_{k−1}``)."""
    m = head.ndim
    coupling = head * _kron(u[:m], head).reshape(head.shape)
    marginals = [coupling] if m == 1 else [coupling.sum(dim=[d for d in range(m) if d != l]) for l in range(m)]
    return sum(float((marginal - w).abs().sum()) for marginal, w in zip(marginals, a[:m], strict=True))


def _log_marginal(log_p: Tensor, l: int) -> Tensor:
    """``log Σ_{i_-l} exp(log_p[i])``: two log-sum-exps over contiguous axes of a ``[A, n_l, B]`` view."""
    shape = log_p.shape
    folded = log_p.reshape(math.prod(shape[:l]), shape[l], math.prod(shape[l + 1 :]))
    top = folded.amax(dim=(0, 2), keepdim=True).clamp_min(torch.finfo(log_p.dtype).min)
    return (folded - top).exp_().sum(dim=(0, 2)).log_() + top.reshape(-1)


def multimarginal_sinkhorn(
    cost: Tensor,
    weights: Sequence[Tensor | None] | None = None,
    *,
    epsilon: float | None = None,
    relative_epsilon: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    check_every: int = 1,
    memory_budget: OTBudget = DEFAULT_OT_MEMORY_BUDGET,
) -> MultiMarginalResult:
    """Solve ``min_P ⟨P, C⟩ + ε KL(P ‖ ⊗a_l)`` over couplings with marginals ``a_1..a_k`` (log-domain).

    Benamou et al., SIAM J. Sci. Comput. 2015; Piran, Klein, Thornton, Cuturi, ICML 2024 (Algorithm 1).

    Args:
        cost: the cost tensor ``[n_1, ..., n_k]``, ``k ≥ 2`` (see :func:`sum_of_pairwise_costs`).
        weights: ``k`` probability vectors (``None`` entries, or ``None`` altogether, mean uniform).
        epsilon: absolute regularisation; give this or ``relative_epsilon``.
        relative_epsilon: ``ε = relative_epsilon × std(C)``, ``std(C)`` the population standard deviation of the
            entries (OTT-JAX's ``std_cost_matrix``; its default is ``0.05 × std``); the default when neither is
            given. A constant cost (std 0) uses ``ε = relative_epsilon``.
        tol: stop once the marginal error ``Σ_l ‖P_l − a_l‖₁ < tol``.
        max_iter: maximum number of sweeps over the ``k`` marginals.
        check_every: sweeps between two evaluations of the marginal error (one extra pass over the tensor).
        memory_budget: bytes the solve may take (``"shared"``: the shared budget of :mod:`pairloss.memory`;
            ``None``: unchecked); ``ValueError`` beyond it.

    The first sweep runs in the log domain; the following ones scale the kernel ``K = P`` (``P = K ⊙ ⊗u``), each
    in two matrix-vector passes over ``K`` whatever ``k`` (see :func:`_kernel_sweep`), with the marginal error read
    from the first pass; the scalings are absorbed into ``log P`` before they can overflow. On a CPU, solves of at
    most :data:`SINGLE_THREAD_ENTRIES` entries run on one thread. The iterations run without autograd;
    differentiate through :class:`~pairloss.losses.multiview.M3GLoss` or by Danskin's theorem (``∂OT_ε/∂C = P``).
    """
    check_tensor(cost, "cost")
    with _one_cpu_thread(cost.numel(), cost.device):
        return _solve(
            cost,
            weights,
            epsilon=epsilon,
            relative_epsilon=relative_epsilon,
            tol=tol,
            max_iter=max_iter,
            check_every=check_every,
            memory_budget=memory_budget,
        )


def _solve(
    cost: Tensor,
    weights: Sequence[Tensor | None] | None = None,
    *,
    epsilon: float | None = None,
    relative_epsilon: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    check_every: int = 1,
    memory_budget: OTBudget = DEFAULT_OT_MEMORY_BUDGET,
) -> MultiMarginalResult:
    """:func:`multimarginal_sinkhorn` on the threads that its caller chose."""
    check_floating(cost, "cost")
    k = cost.ndim
    if k < 2:
        raise ValueError(f"multi-marginal OT needs k >= 2 marginals, got a cost of shape {tuple(cost.shape)}")
    if cost.numel() == 0:
        raise ValueError(f"the cost tensor is empty (shape {tuple(cost.shape)})")
    check_tensor_size(cost.shape, cost.dtype, memory_budget)
    if epsilon is not None and relative_epsilon is not None:
        raise ValueError("give epsilon or relative_epsilon, not both")
    check_positive(tol, "tol")
    if max_iter < 1 or check_every < 1:
        raise ValueError(f"max_iter and check_every must be >= 1, got {max_iter} and {check_every}")
    a = _check_weights(weights, cost)
    with torch.no_grad():
        if epsilon is None:
            scale = 0.05 if relative_epsilon is None else check_positive(relative_epsilon, "relative_epsilon")
            spread = float(cost.std(correction=0))  # the population std, as OTT-JAX's std_cost_matrix
            epsilon = scale * spread if spread > 0 else scale
        check_positive(epsilon, "epsilon")
        log_a = [w.log() for w in a]
        shapes = []
        for l in range(k):
            view = [1] * k
            view[l] = cost.shape[l]
            shapes.append(view)
        # log P = (f ⊕ − C)/ε + log(⊗a), starting from f = 0; the first sweep runs in the log domain, which
        # normalises every slice whatever ε.
        log_p = cost / (-epsilon)
        for l in range(k):
            log_p += log_a[l].reshape(shapes[l])
        g = [torch.zeros_like(w) for w in a]
        # Then scaling iterations on the kernel K = current P (P = K ⊙ ⊗u): each sweep is two matrix-vector
        # passes over K (see _kernel_sweep) instead of log-sum-exps; the scalings are absorbed into log P before
        # they can overflow. ``last`` is K contracted with every scaling but u_{k−1}: P_{k−1} = u_{k−1} ⊙ last.
        limit = math.log(torch.finfo(cost.dtype).max) / (2 * k)
        u = [torch.ones_like(w) for w in a]

        def log_domain_sweep() -> tuple[Tensor, Tensor]:
            for l in range(k):
                delta = log_a[l] - _log_marginal(log_p, l)
                log_p.add_(delta.reshape(shapes[l]))
                g[l] += delta
            return log_p.exp(), a[k - 1]

        def absorb() -> tuple[Tensor, Tensor]:
            marginal = u[k - 1] * last
            for l in range(k):
                log_u = u[l].log()
                log_p.add_(log_u.reshape(shapes[l]))
                g[l] += log_u
                u[l] = torch.ones_like(u[l])
            return torch.exp(log_p, out=kernel), marginal

        kernel, last = log_domain_sweep()
        errors: list[float] = []
        error = math.inf
        iterations = 1
        while True:
            head = _contract_last(kernel, u[k - 1])
            if iterations % check_every == 0 or iterations == max_iter:
                error = _head_marginal_error(head, u, a) + float((u[k - 1] * last - a[k - 1]).abs().sum())
                errors.append(error)
                if error < tol or not math.isfinite(error) or iterations == max_iter:
                    break
            iterations += 1
            try:
                last = _kernel_sweep(kernel, u, a, head)
            except _NonFiniteScaling:
                kernel, last = absorb()
                kernel, last = log_domain_sweep()
                continue
            smallest, largest = torch.cat(u).aminmax()
            if max(-math.log(float(smallest)), math.log(float(largest))) > limit:
                kernel, last = absorb()
        kernel, last = absorb()
        potentials = [epsilon * gl for gl in g]
        value = sum((f * w).sum() for f, w in zip(potentials, a, strict=True))
    assert isinstance(value, Tensor)
    return MultiMarginalResult(
        potentials=potentials,
        value=value,
        epsilon=float(epsilon),
        iterations=iterations,
        marginal_error=error,
        converged=error < tol,
        errors=errors,
        weights=a,
        log_coupling=log_p,
        cost=cost,
        plan=kernel,
    )
