"""RS@k forward + backward: pairloss's row-block engine vs the authors' algorithm (Patel et al.,
RecallatK_surrogate).

Input of every case: ``N`` float32 embeddings of dimension ``D = 512`` from a standard normal, in
contiguous class blocks of 4 samples (the layout the authors' loss assumes), the
same seed for both implementations. Both compute the same definition, the authors'
code's (pairloss's ``code_variant=True``: the query counted in its own rank sum,
the numerator clamped at ``k``), with ``K = (1, 2, 4, 8, 16)``, ``τ1 = 1``, ``τ2 = 0.01``, on L2-normalised
embeddings, so the values and the gradients are compared too.

The peers:

* ``authors-code``: the authors' ``RecallatK`` module from ``src/losses.py`` of a local checkout of
  https://github.com/yash0307/RecallatK_surrogate (set ``RECALLATK_SURROGATE_DIR``; it is never vendored),
  called as their training loop does:
  one call per query in a Python loop, the losses summed, one backward. Its ``.cuda()``
  calls are made no-ops for the call when CUDA is absent (the code is otherwise run unchanged).
* ``authors-algorithm``: when no checkout is available, the same algorithm written here from the paper and the
  code's description: a Python loop over queries, each comparing the query's similarities to all items with
  those to the positives of its contiguous class block (``[N, samples per class]`` per query), under autograd.

OML's ``SurrogatePrecision`` (which builds a ``B × B × B`` tensor) is not measured: installing
``open-metric-learning`` downgrades numpy in this environment.

Run: ``python -m benchmarks.recall_surrogate [--quick] [--out DIR]`` (or through ``python -m benchmarks`` once
listed there).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.measure import ROOT, Case, Measurement, measure
from benchmarks.report import compare, markdown_table, write_json

NAME = "recall_surrogate"
MODULE = "benchmarks.recall_surrogate"
TITLE = "RS@k (Recall@k surrogate), forward + backward, D = 512, 4 samples per class, float32"

SIZES = (1024, 2048, 4096, 8192, 32768)
QUICK_SIZES = (256, 512)
#: The authors' loop over queries is quadratic in Python calls and time; it is measured up to this size.
PEER_MAX_SIZE = 4096
DIMENSION = 512
SAMPLES_PER_CLASS = 4
K = (1, 2, 4, 8, 16)
TAU1 = 1.0
TAU2 = 0.01
AUTHORS_DIR_VARIABLE = "RECALLATK_SURROGATE_DIR"


def _authors_module() -> ModuleType | None:
    """The authors' ``src/losses.py`` from the checkout named by ``RECALLATK_SURROGATE_DIR``, if any."""
    folder = os.environ.get(AUTHORS_DIR_VARIABLE)
    path = Path(folder) / "src" / "losses.py" if folder else None
    if path is None or not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("recallatk_surrogate_losses", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peer() -> str:
    return "authors-code" if _authors_module() is not None else "authors-algorithm"


def cases(quick: bool) -> list[Case]:
    """pairloss at every size, next to the authors' implementation at the same size."""
    sizes = QUICK_SIZES if quick else SIZES
    peer = _peer()
    return [
        Case(MODULE, "rs_at_k", implementation, {"n": n, "d": DIMENSION, "m": SAMPLES_PER_CLASS, "seed": 0})
        for n in sizes
        for implementation in ("pairloss", peer)
        if implementation == "pairloss" or n <= PEER_MAX_SIZE
    ]


@contextlib.contextmanager
def _cuda_calls_are_no_ops() -> Iterator[None]:
    """Let code written for a GPU run on the CPU: ``Tensor.cuda()`` returns the tensor itself."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def _sigmoid(x: Tensor, temperature: float) -> Tensor:
    return torch.sigmoid(x / temperature)


def authors_algorithm(embeddings: Tensor, samples_per_class: int) -> Tensor:
    """RS@k as the authors' code computes it: a loop over queries, contiguous class blocks of equal size.

    For query ``q`` in block ``g``, every ``x`` of the block and the whole batch (the query included):

        rank(x) = 1 + Σ_{z ≠ x} σ((s_qz − s_qx)/τ2)
        R(q, k) = min(Σ_{x ∈ g, x ≠ q} σ((k − rank(x))/τ1), k) / min(k, m − 1)
        L       = mean_q mean_k (1 − R(q, k))
    """
    x = F.normalize(embeddings, dim=1)
    n = x.shape[0]
    m = samples_per_class
    ks = torch.tensor([min(n, k) for k in K], dtype=x.dtype, device=x.device)
    norm = torch.minimum(ks, torch.tensor(float(m - 1), dtype=x.dtype, device=x.device))
    columns = torch.arange(m, device=x.device)
    total = x.new_zeros(())
    for q in range(n):
        start = (q // m) * m
        sim = x @ x[q]
        block = sim[start : start + m]
        above = _sigmoid(sim[:, None] - block[None, :], TAU2)  # [N, m]: z above each x of the block
        not_x = torch.ones(n, m, dtype=x.dtype, device=x.device)
        not_x[start + columns, columns] = 0
        rank = 1 + (above * not_x).sum(0)
        soft = _sigmoid(ks[None, :] - rank[:, None], TAU1)  # [m, |K|]
        keep = torch.ones(m, 1, dtype=x.dtype, device=x.device)
        keep[q - start] = 0
        recall = torch.minimum((soft * keep).sum(0), ks) / norm
        total = total + (1 - recall.mean())
    return total / n


def _authors_code_step(embeddings: Tensor, samples_per_class: int) -> Callable[[], Tensor]:
    module = _authors_module()
    assert module is not None
    n = embeddings.shape[0]
    criterion = module.RecallatK(
        anneal=TAU2,
        batch_size=n,
        num_id=n // samples_per_class,
        feat_dims=embeddings.shape[1],
        k_vals=list(K),
        k_temperatures=[TAU1] * len(K),
        mixup=0,
    )

    def step() -> Tensor:
        x = F.normalize(embeddings, dim=1)
        with _cuda_calls_are_no_ops():
            return sum((criterion(x, q) for q in range(n)), start=x.new_zeros(()))

    return step


def setup(case: Case) -> tuple[Callable[[], Tensor], Tensor]:
    """Build the inputs and the loss of ``case``; return ``(step, embeddings)``."""
    params: dict[str, Any] = case.params
    generator = torch.Generator().manual_seed(params["seed"])
    embeddings = torch.randn(params["n"], params["d"], generator=generator).requires_grad_()
    m = params["m"]
    labels = torch.arange(params["n"]) // m
    if case.implementation == "pairloss":
        from pairloss.losses.recall import RecallAtKSurrogateLoss

        loss = RecallAtKSurrogateLoss(k=K, tau1=TAU1, tau2=TAU2, code_variant=True)
        queries = params.get("queries")
        if queries is not None:  # memory probe: the first queries against all N references
            return (lambda: loss(embeddings[:queries], labels[:queries], embeddings, labels)), embeddings
        return (lambda: loss(embeddings, labels)), embeddings
    if case.implementation == "authors-code":
        return _authors_code_step(embeddings, m), embeddings
    return (lambda: authors_algorithm(embeddings, m)), embeddings


def memory_probe(n: int = 32768, queries: int = 1024, time_cap: float = 1200.0) -> Measurement:
    """Peak memory of RS@k for ``queries`` queries against all ``n`` references (fresh process, 24 GiB cap).

    A full run over ``n`` queries holds the same per-block temporaries (one block of queries against all
    references at a time) plus ``O(n · D)`` query tensors, and takes ``n / queries`` times longer.
    """
    case = Case(
        MODULE,
        "rs_at_k_probe",
        "pairloss",
        {"n": n, "queries": queries, "d": DIMENSION, "m": SAMPLES_PER_CLASS, "seed": 0},
    )
    with tempfile.TemporaryDirectory(prefix="pairloss-bench-") as grad_dir:
        return measure(case, repeats=0, time_cap=time_cap, memory_cap=24 * 2**30, grad_dir=Path(grad_dir))


def run(out_dir: Path, quick: bool, *, repeats: int = 2, time_cap: float = 240.0) -> list[dict[str, Any]]:
    """Measure every case (each in a fresh memory-capped process) and write
    ``out_dir/recall_surrogate.json``."""
    memory_cap = 24 * 2**30
    measurements: list[Measurement] = []
    failed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="pairloss-bench-") as grad_dir:
        for case in cases(quick):
            if case.implementation in failed:
                measurements.append(Measurement(case, "skipped", message="failed at a smaller size"))
                continue
            result = measure(case, repeats=repeats, time_cap=time_cap, memory_cap=memory_cap, grad_dir=Path(grad_dir))
            if result.status in ("oom", "timeout"):
                failed.add(case.implementation)
            measurements.append(result)
            seconds = f"{result.median_s:.3f} s" if result.median_s is not None else result.message
            peak = f"{result.peak_bytes / 2**20:,.0f} MiB" if result.peak_bytes is not None else ""
            print(f"{case.implementation} N={case.params['n']}: {result.status} {seconds} {peak}", flush=True)
        settings = {
            "quick": quick,
            "repeats": repeats,
            "time_cap_s": time_cap,
            "memory_cap_bytes": memory_cap,
        }
        stem = f"{NAME}-quick" if quick else NAME
        write_json(out_dir / f"{stem}.json", NAME, TITLE, settings, measurements)
        rows = compare(measurements)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall_surrogate", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--time-cap", type=float, default=240.0)
    parser.add_argument("--probe", action="store_true", help="only the N = 32768 memory probe")
    args = parser.parse_args(argv)
    if args.probe:
        probe = memory_probe()
        peak = probe.peak_bytes / 2**20 if probe.peak_bytes is not None else float("nan")
        print(f"probe {probe.case.params}: {probe.status} {probe.median_s} s, peak {peak:.0f} MiB {probe.message}")
        return
    rows = run(args.out, args.quick, repeats=args.repeats, time_cap=args.time_cap)
    print(markdown_table(rows))
    for row in rows:
        if row["speedup"] is not None and math.isfinite(row["speedup"]):
            print(f"N={row['n']}: speed-up {row['speedup']:.1f}x, grad rel diff {row['grad_rel_diff']}")


if __name__ == "__main__":
    main()
