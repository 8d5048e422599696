"""RankNet, LambdaRank and LambdaLoss forward + backward on padded lists: pairloss vs allRank's loss functions.

Input of every case: ``B`` lists of ``L`` items (float32), scores from a standard normal, graded relevance
0–4, and the last 0–``L/2`` slots of each list padded (relevance ``-1``), the same seed for every
implementation. Every loss uses σ = 1; RankNet is the mean over pairs, LambdaRank (|ΔNDCG| weights, no
truncation) and LambdaLoss (NDCG-Loss2++, μ = 10) the sum over pairs, allRank's defaults, so values and
gradients are compared too.

Conditions: ``idle`` (nothing started by the benchmark) and ``busy``: one competing process that spins on a core
from before the measured process starts to after it ends (:func:`benchmarks.measure.busy_process`), so that
pairloss and the peer meet the same contention.

The peers:

* ``allrank``: ``allrank.models.losses.rankNet`` and ``lambdaLoss(weighing_scheme="lambdaRank_scheme")``
  from the allRank package (https://github.com/allegro/allRank, v1.4.3). Its releases pin ``torch<=1.8``,
  so it is not installable next to torch 2.13 with pip's resolver; install it apart with
  ``pip install --no-deps --target DIR allrank==1.4.3 attrs`` and set ``ALLRANK_PATH=DIR``. Its loss modules
  import allRank's data-loading and GCS helpers (``torchvision``, ``gcsfs``, ``pkg_resources``), unused by the
  losses: when those packages are absent, empty stand-ins are registered for the import only. The loss code
  itself runs unchanged.
* ``dense-reference``: when allRank is not available, the same formulas written directly in PyTorch here (one
  ``[B, L, L]`` tensor per pairwise quantity, no chunking), the way a dense implementation computes them.

Run: ``python -m benchmarks.ranking_losses [--quick] [--out DIR]`` (a full run regenerates the table of
``docs/ranking.md``; ``--docs-only`` regenerates it from the JSON), or ``python -m benchmarks --only
ranking_losses``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.measure import CONDITIONS, ROOT, Case, Measurement, measure
from benchmarks.report import compare, update_docs, write_json

NAME = "ranking_losses"
TITLE = "RankNet and LambdaRank, forward + backward, L = 100 items per list, float32"

LOSSES = ("ranknet", "lambdarank", "lambdaloss")
SIZES = (1000, 10000)
QUICK_SIZES = (200, 1000)
LENGTH = 100
#: allRank's name of each loss's weighing scheme in ``lambdaLoss`` (RankNet is its own function there).
ALLRANK_SCHEMES = {"lambdarank": "lambdaRank_scheme", "lambdaloss": "ndcgLoss2PP_scheme"}
ALLRANK_VARIABLE = "ALLRANK_PATH"
MODULE = "benchmarks.ranking_losses"
#: The page whose ``<!-- bench:ranking_losses -->`` table a full run regenerates.
DOCS_PAGE = ROOT / "docs" / "ranking.md"


def _allrank_losses() -> types.ModuleType | None:
    """``allrank.models.losses`` if it can be imported (from ``ALLRANK_PATH`` or the environment)."""
    folder = os.environ.get(ALLRANK_VARIABLE)
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    for name in ("gcsfs", "torchvision", "torchvision.transforms", "pkg_resources"):
        try:
            __import__(name)
        except ImportError:
            stand_in = types.ModuleType(name)
            stand_in.Compose = object  # type: ignore[attr-defined]
            stand_in.Requirement = object  # type: ignore[attr-defined]
            stand_in.resource_filename = lambda *args: ""  # type: ignore[attr-defined]
            sys.modules[name] = stand_in
    if "torchvision" in sys.modules and "torchvision.transforms" in sys.modules:
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    try:
        import allrank.models.losses as losses
    except ImportError:
        return None
    return losses


def _peer() -> str:
    return "allrank" if _allrank_losses() is not None else "dense-reference"


def cases(quick: bool, sizes: tuple[int, ...] | None = None) -> list[Case]:
    """pairloss and the peer, back to back, for each condition, loss and number of lists (``sizes``, default
    :data:`SIZES`, or :data:`QUICK_SIZES` when ``quick``)."""
    peer = _peer()
    return [
        Case(MODULE, loss, implementation, {"n": b, "length": LENGTH, "seed": 0}, condition=condition)
        for condition in CONDITIONS
        for loss in LOSSES
        for b in (sizes or (QUICK_SIZES if quick else SIZES))
        for implementation in ("pairloss", peer)
    ]


def make_lists(lists: int, length: int, seed: int) -> tuple[Tensor, Tensor]:
    """Scores ``[B, L]`` (standard normal) and relevance ``[B, L]`` (0–4, tail padded with ``-1``)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(lists, length, generator=gen)
    relevance = torch.randint(0, 5, (lists, length), generator=gen).float()
    keep = length - torch.randint(0, length // 2 + 1, (lists, 1), generator=gen)
    relevance[torch.arange(length)[None, :] >= keep] = -1.0
    return scores, relevance


def dense_ranknet(scores: Tensor, relevance: Tensor) -> Tensor:
    """RankNet, mean over pairs ``y_i > y_j`` of ``log(1 + e^{−(s_i − s_j)})``, with dense ``[B, L, L]`` tensors."""
    valid = relevance != -1
    pairs = (relevance[:, :, None] > relevance[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]
    return F.softplus(-diff)[pairs].mean()


def dense_lambda(scores: Tensor, relevance: Tensor, scheme: str = "lambdarank", mu: float = 10.0) -> Tensor:
    """LambdaRank (|ΔNDCG|-weighted RankNet in log base 2, summed over pairs), or with ``scheme="lambdaloss"``
    NDCG-Loss2++ (``μ δ_ij |G_i − G_j| + |ΔNDCG_ij|``), with dense ``[B, L, L]`` tensors."""
    valid = relevance != -1
    key = torch.where(valid, scores.detach(), torch.tensor(-math.inf))
    rank = key.argsort(dim=1, descending=True).argsort(dim=1).float()
    inv_d = 1.0 / torch.log2(rank + 2.0)
    gains = torch.where(valid, torch.exp2(relevance) - 1.0, torch.zeros(()))
    ideal = gains.sort(dim=1, descending=True).values
    idcg = (ideal / torch.log2(torch.arange(2, relevance.shape[1] + 2).float())).sum(1, keepdim=True)
    g = gains / idcg.clamp_min(1e-10)
    gain_gap = (g[:, :, None] - g[:, None, :]).abs()
    weights = (inv_d[:, :, None] - inv_d[:, None, :]).abs() * gain_gap
    if scheme == "lambdaloss":
        rank_gap = (rank[:, :, None] - rank[:, None, :]).abs().clamp_min(1.0)
        delta = 1.0 / torch.log2(1.0 + rank_gap) - 1.0 / torch.log2(2.0 + rank_gap)
        weights = weights + mu * delta * gain_gap
    pairs = (relevance[:, :, None] > relevance[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]
    return (weights * F.softplus(-diff) / math.log(2.0))[pairs].sum()


def setup(case: Case) -> tuple[Callable[[], Tensor], Tensor]:
    """Build the inputs and the loss of ``case``; return ``(step, scores)``."""
    params: dict[str, Any] = case.params
    scores, relevance = make_lists(params["n"], params["length"], params["seed"])
    scores.requires_grad_()
    if case.implementation == "pairloss":
        from pairloss.losses.ranking import lambda_loss, lambdarank_loss, ranknet_loss

        pairloss_steps = {
            "ranknet": lambda: ranknet_loss(scores, relevance),
            "lambdarank": lambda: lambdarank_loss(scores, relevance),
            "lambdaloss": lambda: lambda_loss(scores, relevance, weighing_scheme="ndcg_loss2pp"),
        }
        step = pairloss_steps[case.loss]
    elif case.implementation == "allrank":
        losses = _allrank_losses()
        if losses is None:
            raise ImportError("allRank is not importable (set ALLRANK_PATH)")
        if case.loss == "ranknet":
            step = lambda: losses.rankNet(scores, relevance)  # noqa: E731
        else:
            scheme = ALLRANK_SCHEMES[case.loss]
            step = lambda: losses.lambdaLoss(scores, relevance, weighing_scheme=scheme)  # noqa: E731
    elif case.loss == "ranknet":
        step = lambda: dense_ranknet(scores, relevance)  # noqa: E731
    else:
        step = lambda: dense_lambda(scores, relevance, case.loss)  # noqa: E731
    return step, scores


def run(
    out_dir: Path, quick: bool, *, repeats: int = 2, time_cap: float = 240.0, sizes: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """Measure every case (each in a fresh memory-capped process) and write ``out_dir/ranking_losses.json``."""
    memory_cap = 20 * 2**30
    measurements: list[Measurement] = []
    failed: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="pairloss-bench-") as grad_dir:
        for case in cases(quick, sizes):
            if (case.loss, case.implementation) in failed:
                measurements.append(Measurement(case, "skipped", message="failed at a smaller size"))
                continue
            result = measure(case, repeats=repeats, time_cap=time_cap, memory_cap=memory_cap, grad_dir=Path(grad_dir))
            if result.status in ("oom", "timeout"):
                failed.add((case.loss, case.implementation))
            measurements.append(result)
            seconds = f"{result.median_s:.3f} s" if result.median_s is not None else result.message
            peak = f"{result.peak_bytes / 2**20:,.0f} MiB" if result.peak_bytes is not None else ""
            label = f"{case.condition} {case.loss} {case.implementation} B={case.params['n']}"
            print(f"{label}: {result.status} {seconds} {peak}", flush=True)
        settings = {"quick": quick, "repeats": repeats, "time_cap_s": time_cap, "memory_cap_bytes": memory_cap}
        stem = f"{NAME}-quick" if quick else NAME
        write_json(out_dir / f"{stem}.json", NAME, TITLE, settings, measurements)
        rows = compare(measurements)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a Markdown table (``n`` lists of ``length`` items; failures shown by status)."""

    def cell(status: str, value: float | None, scale: float = 1.0, digits: int = 3) -> str:
        return f"{value / scale:,.{digits}f}" if status == "ok" and value is not None else status.upper()

    lines = [
        "| condition | loss | lists × items | peer | pairloss time (s) | peer time (s) | speed-up (peer/pairloss) "
        "| pairloss peak (MiB) | peer peak (MiB) | memory (pairloss/peer) | value rel. diff | grad rel. diff |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = f"{row['speedup']:.1f}×" if row["speedup"] is not None else "—"
        memory = f"{row['memory_ratio']:.3f}" if row["memory_ratio"] is not None else "—"
        value = f"{row['value_rel_diff']:.1e}" if row["value_rel_diff"] is not None else "—"
        grad = f"{row['grad_rel_diff']:.1e}" if row["grad_rel_diff"] is not None else "—"
        lines.append(
            f"| {row.get('condition', 'idle')} | {row['loss']} | {row['n']} × {row['length']} | {row['peer']} "
            f"| {cell(row['pairloss_status'], row['pairloss_median_s'])} "
            f"| {cell(row['peer_status'], row['peer_median_s'])} | {speedup} "
            f"| {cell(row['pairloss_status'], row['pairloss_peak_bytes'], 2**20, 0)} "
            f"| {cell(row['peer_status'], row['peer_peak_bytes'], 2**20, 0)} | {memory} | {value} | {grad} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ranking_losses", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lists", type=int, nargs="+", help="numbers of lists to run (default: 1000 10000)")
    parser.add_argument("--docs-only", action="store_true", help="regenerate the docs table from the JSON")
    args = parser.parse_args(argv)
    sizes = tuple(args.lists) if args.lists else None
    if args.docs_only:
        rows = json.loads((args.out / f"{NAME}.json").read_text())["comparisons"]
    else:
        rows = run(args.out, args.quick, repeats=args.repeats, sizes=sizes)
    table = markdown_table(rows)
    print(table)
    if not args.quick and sizes is None:
        update_docs(DOCS_PAGE, NAME, table)


if __name__ == "__main__":
    main()
