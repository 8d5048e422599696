"""Multi-marginal Sinkhorn: pairloss vs OTT-JAX's ``MMSinkhorn`` on CPU, time, memory and sweeps to one tolerance.

``python -m benchmarks.mm_sinkhorn [--quick] [--out DIR]`` writes ``DIR/mm_sinkhorn[-quick].json``, prints a table
and (full runs) regenerates its table in ``docs/benchmarks.md``; ``--docs-only`` regenerates the table from the JSON.

Method. For each ``(n, k)``: ``k`` point clouds of ``n`` Gaussian points in ``d = 8``, squared-Euclidean pairwise
cost, uniform marginals, float32, ``ε = 0.05 × std(C)`` (OTT-JAX's default), stopping when the L1 marginal error
summed over the ``k`` marginals is below ``1e-3``, checked every 10 sweeps by both solvers (OTT-JAX's default
``inner_iterations``). The timed call builds the cost tensor and solves, for both solvers. Each solver of each size
runs in a fresh Python process (``python -m benchmarks.mm_sinkhorn --child``), the two solvers of one size back to
back: one warm-up run (JAX compiles there), then the kernel's peak-RSS mark is reset and ``repeats`` timed runs
follow; the median time is reported, the CPU time (user + system, all threads) per run, and the peak memory
``VmHWM − VmRSS`` over the timed runs. The regularised
costs are compared in OTT-JAX's convention (negative entropy): ``OT^H = OT^KL − ε Σ_l H(a_l)``.

Conditions, all in one run: ``idle`` (no other process started by the benchmark; the load average is recorded) and
``busy`` (one competing busy process started before the size's two solvers and stopped after them), each with the
default threads of both libraries and with one thread each (``torch.set_num_threads(1)``; XLA's
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import update_docs

ROOT = Path(__file__).resolve().parents[1]

FULL_SIZES = [(32, 3), (64, 3), (128, 3), (32, 4), (64, 4)]
QUICK_SIZES = [(32, 3), (64, 3), (32, 4)]
TOL = 1e-3
CHECK_EVERY = 10
RELATIVE_EPSILON = 0.05
DIM = 8
SOLVERS = ("pairloss", "ott-jax")
CONDITIONS = (("idle", None), ("busy", None), ("idle", 1), ("busy", 1))
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _points(n: int, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, DIM)).astype(np.float32) for _ in range(k)]


def _status_bytes(name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {name}")
    return int(match.group(1)) * 1024


def _pairloss_solver(points: list[np.ndarray]) -> Any:
    import torch

    from pairloss.losses.ot import multimarginal_sinkhorn, sum_of_pairwise_costs

    xs = [torch.from_numpy(p) for p in points]

    def solve() -> dict[str, Any]:
        cost = sum_of_pairwise_costs(xs, memory_budget=None)
        result = multimarginal_sinkhorn(
            cost, relative_epsilon=RELATIVE_EPSILON, tol=TOL, max_iter=2000, check_every=CHECK_EVERY, memory_budget=None
        )
        n, k = xs[0].shape[0], len(xs)
        return {
            "iterations": result.iterations,
            "marginal_error": result.marginal_error,
            "converged": result.converged,
            "epsilon": result.epsilon,
            "value_negentropy": float(result.value) - result.epsilon * k * math.log(n),
        }

    return solve


def _ott_solver(points: list[np.ndarray]) -> Any:
    import jax
    import jax.numpy as jnp
    from ott.experimental.mmsinkhorn import MMSinkhorn

    solver = MMSinkhorn(threshold=TOL, inner_iterations=CHECK_EVERY, max_iterations=2000)
    xs = tuple(jnp.asarray(p) for p in points)
    run = jax.jit(lambda x: solver(x))

    def solve() -> dict[str, Any]:
        out = run(xs)
        jax.block_until_ready(out.potentials)
        errors = np.asarray(out.errors)[:, 0]
        done = errors[errors != -1]
        return {
            "iterations": int(out.n_iters),
            "marginal_error": float(done[-1]) if done.size else float("nan"),
            "converged": bool(out.converged),
            "epsilon": float(out.epsilon),
            "value_negentropy": float(out.ent_reg_cost),
        }

    return solve


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside the fresh process: build the solver, warm up, reset the peak mark, time ``repeats`` runs."""
    if spec["threads"] is not None:
        import torch

        torch.set_num_threads(spec["threads"])
    points = _points(spec["n"], spec["k"], seed=spec["n"] + spec["k"])
    try:
        solve = (_pairloss_solver if spec["solver"] == "pairloss" else _ott_solver)(points)
    except ImportError as error:
        return {"status": "missing", "message": str(error)}
    result = solve()
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    times = []
    cpu_start = sum(os.times()[:2])
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        result = solve()
        times.append(time.perf_counter() - start)
    return {
        "status": "ok",
        "seconds": statistics.median(times),
        "all_seconds": times,
        "cpu_seconds_per_run": (sum(os.times()[:2]) - cpu_start) / spec["repeats"],
        "peak_bytes": _status_bytes("VmHWM") - baseline,
        **result,
    }


def _measure(solver: str, n: int, k: int, threads: int | None, repeats: int) -> dict[str, Any]:
    spec = {"solver": solver, "n": n, "k": k, "threads": threads, "repeats": repeats}
    env = dict(os.environ)
    if threads is not None and solver == "ott-jax":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.mm_sinkhorn", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        return {"status": "error", "message": done.stderr.strip().splitlines()[-1][:300] if done.stderr else ""}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _busy() -> subprocess.Popen[bytes]:
    """One process that keeps a core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(out_dir: Path | str, quick: bool = False) -> dict[str, Any]:
    """Every size, solver and condition; write ``out_dir/mm_sinkhorn[-quick].json`` and return the results."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 1 if quick else 3
    rows = []
    for condition, threads in CONDITIONS:
        for n, k in sizes:
            competitor = _busy() if condition == "busy" else None
            try:
                row: dict[str, Any] = {
                    "condition": condition,
                    "threads": "default" if threads is None else threads,
                    "n": n,
                    "k": k,
                    "entries": n**k,
                    "load_average": os.getloadavg()[0],
                }
                for solver in SOLVERS:
                    row[solver] = _measure(solver, n, k, threads, repeats)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            rows.append(row)
            print(_line(row), flush=True)
    payload = {
        "method": __doc__,
        "tol": TOL,
        "relative_epsilon": RELATIVE_EPSILON,
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mm_sinkhorn{'-quick' if quick else ''}.json").write_text(json.dumps(payload, indent=2))
    return payload


def _line(row: dict[str, Any]) -> str:
    ours, theirs = row["pairloss"], row["ott-jax"]
    head = f"| {row['condition']} | {row['threads']} | {row['n']} | {row['k']} |"
    if ours.get("status") != "ok" or theirs.get("status") != "ok":
        return f"{head} {ours.get('status')} | – | – | {theirs.get('status')} | – | – | – | – |"
    return (
        f"{head} {ours['seconds']:.3f} | {ours['iterations']} | {ours['peak_bytes'] / 2**20:.0f} | "
        f"{theirs['seconds']:.3f} | {theirs['iterations']} | {theirs['peak_bytes'] / 2**20:.0f} | "
        f"**{theirs['seconds'] / ours['seconds']:.2f}×** | "
        f"{abs(ours['value_negentropy'] - theirs['value_negentropy']):.1e} |"
    )


HEADER = (
    "| condition | threads | n | k | pairloss s | pairloss sweeps | pairloss peak MiB | OTT-JAX s | OTT-JAX sweeps | "
    "OTT-JAX peak MiB | OTT-JAX / pairloss time | \\|Δ cost\\| |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table(payload: dict[str, Any]) -> str:
    """The Markdown table of a run (one row per condition, threads and size)."""
    return "\n".join([HEADER, *(_line(row) for row in payload["rows"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mm_sinkhorn", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help="the three smallest sizes, one timed run")
    parser.add_argument("--docs-only", action="store_true", help="regenerate the docs table from the JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return
    if not args.docs_only:
        print(HEADER, flush=True)
        run(args.out, args.quick)
    if not args.quick:
        payload = json.loads((args.out / "mm_sinkhorn.json").read_text())
        update_docs(ROOT / "docs" / "benchmarks.md", "mm_sinkhorn", table(payload))


if __name__ == "__main__":
    main()
