"""Multi-marginal Sinkhorn: pairloss vs OTT-JAX's ``MMSinkhorn`` on CPU, time and iterations to one tolerance.

``python -m benchmarks.mm_sinkhorn [--quick] [--out DIR]`` writes ``DIR/mm_sinkhorn.json`` and prints a table.

Method. For each ``(n, k)``: ``k`` point clouds of ``n`` Gaussian points in ``d = 8``, squared-Euclidean pairwise
cost, uniform marginals, float32, ``ε = 0.05 × std(C)`` (OTT-JAX's default), stopping when the L1 marginal error
summed over the ``k`` marginals is below ``1e-3``, checked every 10 sweeps by both solvers (OTT-JAX's default
``inner_iterations``). Each solver runs once as a warm-up (JAX compiles there), then ``repeats`` timed runs; the
median is reported. The regularised costs are compared in OTT-JAX's convention (negative entropy):
``OT^H = OT^KL − ε Σ_l H(a_l)``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairloss.losses.ot import multimarginal_sinkhorn, sum_of_pairwise_costs

FULL_SIZES = [(32, 3), (64, 3), (128, 3), (32, 4), (64, 4), (128, 4)]
QUICK_SIZES = [(32, 3), (64, 3), (32, 4)]
TOL = 1e-3
CHECK_EVERY = 10
RELATIVE_EPSILON = 0.05
DIM = 8


def _points(n: int, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, DIM)).astype(np.float32) for _ in range(k)]


def _time(fn: Any, repeats: int) -> tuple[float, Any]:
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _pairloss_case(points: list[np.ndarray], repeats: int) -> dict[str, Any]:
    xs = [torch.from_numpy(p) for p in points]

    def solve() -> Any:
        cost = sum_of_pairwise_costs(xs, memory_budget=None)
        return multimarginal_sinkhorn(
            cost, relative_epsilon=RELATIVE_EPSILON, tol=TOL, max_iter=2000, check_every=CHECK_EVERY, memory_budget=None
        )

    seconds, result = _time(solve, repeats)
    n, k = xs[0].shape[0], len(xs)
    return {
        "seconds": seconds,
        "iterations": result.iterations,
        "marginal_error": result.marginal_error,
        "converged": result.converged,
        "epsilon": result.epsilon,
        "value_negentropy": float(result.value) - result.epsilon * k * math.log(n),
    }


def _ott_case(points: list[np.ndarray], repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from ott.experimental.mmsinkhorn import MMSinkhorn

    solver = MMSinkhorn(threshold=TOL, inner_iterations=CHECK_EVERY, max_iterations=2000)
    xs = tuple(jnp.asarray(p) for p in points)
    run = jax.jit(lambda x: solver(x))

    def solve() -> Any:
        out = run(xs)
        jax.block_until_ready(out.potentials)
        return out

    seconds, out = _time(solve, repeats)
    errors = np.asarray(out.errors)[:, 0]
    done = errors[errors != -1]
    return {
        "seconds": seconds,
        "iterations": int(out.n_iters),
        "marginal_error": float(done[-1]) if done.size else float("nan"),
        "converged": bool(out.converged),
        "epsilon": float(out.epsilon),
        "value_negentropy": float(out.ent_reg_cost),
    }


def run(out_dir: Path | str, quick: bool = False) -> dict[str, Any]:
    """Run every size for both solvers; write ``out_dir/mm_sinkhorn[-quick].json`` and return the results."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 1 if quick else 3
    try:
        import ott  # noqa: F401

        have_ott = True
    except ImportError:
        have_ott = False
    rows = []
    for n, k in sizes:
        points = _points(n, k, seed=n + k)
        row: dict[str, Any] = {"n": n, "k": k, "entries": n**k, "pairloss": _pairloss_case(points, repeats)}
        row["ott-jax"] = _ott_case(points, repeats) if have_ott else None
        rows.append(row)
        print(_line(row), flush=True)
    payload = {
        "method": __doc__,
        "tol": TOL,
        "relative_epsilon": RELATIVE_EPSILON,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mm_sinkhorn{'-quick' if quick else ''}.json").write_text(json.dumps(payload, indent=2))
    return payload


def _line(row: dict[str, Any]) -> str:
    ours, theirs = row["pairloss"], row["ott-jax"]
    if theirs is None:
        return f"| {row['n']} | {row['k']} | {ours['seconds']:.3f} | {ours['iterations']} | – | – | – | – |"
    return (
        f"| {row['n']} | {row['k']} | {ours['seconds']:.3f} | {ours['iterations']} | {theirs['seconds']:.3f} | "
        f"{theirs['iterations']} | {theirs['seconds'] / ours['seconds']:.2f}× | "
        f"{abs(ours['value_negentropy'] - theirs['value_negentropy']):.1e} |"
    )


HEADER = (
    "| n | k | pairloss s | pairloss sweeps | OTT-JAX s | OTT-JAX sweeps | OTT-JAX / pairloss time | "
    "|Δ cost| |\n|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mm_sinkhorn", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help="the three smallest sizes, one timed run")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    run(args.out, args.quick)


if __name__ == "__main__":
    main()
