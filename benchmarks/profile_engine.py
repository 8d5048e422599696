"""Kernel and host-synchronisation counts of one forward + backward, and its time idle and beside a busy process.

``python -m benchmarks.profile_engine [--n 8192] [--out benchmarks/results/profile_engine.json]
[--docs docs/benchmarks.md]``

For contrastive and multi-similarity (pairloss and pytorch-metric-learning, default arguments, ``D = 128``,
100 classes, float32, the inputs of :mod:`benchmarks.metric_losses`), one warmed-up forward + backward runs under
:mod:`torch.profiler`; the script counts

* **aten ops**: the operator calls that reach a kernel, i.e. the ``aten::`` events that are not nested inside
  another ``aten::`` event (an op called by an op is part of its parent's work);
* **host synchronisations**: the calls that make the host wait for a value on the device: ``aten::item`` and
  ``aten::_local_scalar_dense`` (``.item()``, ``int(t)``, ``float(t)``, ``bool(t)``), ``aten::nonzero`` and the
  ``aten::unique`` family (output size read back), ``Tensor.tolist`` calls (counted by a torch function mode),
  and, on CUDA, ``cudaStreamSynchronize`` / ``cudaDeviceSynchronize``. Each Python-level sync is counted once (an
  ``item`` and the ``_local_scalar_dense`` it calls are one sync).

The times are those of :mod:`benchmarks.measure` (each case in a fresh process, median of the timed runs), first
on the machine as it is ("idle") and then with one competing busy process started before and stopped after the
case ("busy").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import pairloss
from benchmarks import metric_losses
from benchmarks._embeddings import CLASSES, DIMENSION, random_batch
from benchmarks.measure import CONDITIONS, ROOT, Case, measure
from benchmarks.report import update_docs
from pairloss import engine, links

LOSSES = ("contrastive", "multi_similarity")
IMPLEMENTATIONS = ("pairloss", "pytorch-metric-learning")
#: Profiler event names that make the host wait for the device.
SYNC_EVENTS = {
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::masked_select",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
}


class _ToListCounter(TorchFunctionMode):
    """Counts ``Tensor.tolist`` calls (a read-back that the profiler shows as no ``aten`` op)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.tolist:
            self.calls += 1
        return func(*args, **(kwargs or {}))


#: Operators that only make a new view or alias of existing memory: no kernel runs.
VIEW_OPS = {
    "aten::alias",
    "aten::as_strided",
    "aten::detach",
    "aten::diagonal",
    "aten::expand",
    "aten::expand_as",
    "aten::lift_fresh",
    "aten::narrow",
    "aten::numpy_T",
    "aten::permute",
    "aten::reshape",
    "aten::select",
    "aten::slice",
    "aten::split",
    "aten::squeeze",
    "aten::t",
    "aten::transpose",
    "aten::unbind",
    "aten::unsqueeze",
    "aten::view",
}


def _is_aten(name: str) -> bool:
    return name.startswith("aten::")


def counts(step: Any, leaf: torch.Tensor) -> dict[str, int]:
    """``{"aten_ops", "kernels", "host_syncs", "tolist"}`` of one ``step().backward()`` (after a warm-up call);
    ``kernels`` are the aten ops less the views (:data:`VIEW_OPS`), which run no kernel. The profiled call runs
    with one intra-op thread, so that a CPU computation whose blocks are otherwise shared by threads
    (:mod:`pairloss._block_threads`) runs them all in the calling thread, where the profiler and the ``tolist``
    counter see them: the same operators, on one thread."""
    leaf.grad = None
    step().backward()
    leaf.grad = None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if leaf.is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    counter = _ToListCounter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.profiler.profile(activities=activities) as profile, counter:
            step().backward()
            if leaf.is_cuda:
                torch.cuda.synchronize()
    finally:
        torch.set_num_threads(threads)
    events = profile.events()
    aten_ops = 0
    kernels = 0
    syncs = 0
    for event in events:
        parent = event.cpu_parent
        nested = False
        while parent is not None:
            if _is_aten(parent.name):
                nested = True
                break
            parent = parent.cpu_parent
        if _is_aten(event.name) and not nested:
            aten_ops += 1
            kernels += event.name not in VIEW_OPS
        # item() calls _local_scalar_dense: count the sync once, at the innermost read-back
        if event.name in SYNC_EVENTS and not (event.name == "aten::nonzero" and _under(event, "aten::masked_select")):
            syncs += 1
    if leaf.is_cuda:  # the final synchronize above is the profiler's, not the loss's
        syncs -= 1
    return {"aten_ops": aten_ops, "kernels": kernels, "host_syncs": syncs + counter.calls, "tolist": counter.calls}


def _under(event: Any, name: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == name:
            return True
        parent = parent.cpu_parent
    return False


def _setup(implementation: str, loss: str, n: int, device: str) -> tuple[Any, torch.Tensor]:
    """The step and leaf of :mod:`benchmarks.metric_losses` on ``device``."""
    embeddings, labels = random_batch({"n": n, "d": DIMENSION, "classes": CLASSES, "seed": 0})
    leaf = embeddings.detach().to(device).requires_grad_()
    labels = labels.to(device)
    loss_fn = metric_losses.loss_class(implementation, loss)()
    return (lambda: loss_fn(leaf, labels)), leaf


@contextmanager
def _sync_free_path() -> Iterator[None]:
    """The engine's sync-free path on the CPU (both sparse densities at 0; see :func:`pairloss.engine.sync_free`)."""
    saved = engine.SPARSE_SLOPE_DENSITY, links.SPARSE_MASK_DENSITY
    engine.SPARSE_SLOPE_DENSITY = links.SPARSE_MASK_DENSITY = 0.0
    try:
        yield
    finally:
        engine.SPARSE_SLOPE_DENSITY, links.SPARSE_MASK_DENSITY = saved


def run(n: int, device: str, times: bool, repeats: int) -> dict[str, Any]:
    """Counts (and, with ``times``, idle and busy times) of every loss and implementation at size ``n``."""
    with tempfile.TemporaryDirectory(prefix="pairloss-profile-") as grad_dir:
        return _run(n, device, times, repeats, Path(grad_dir))


def _run(n: int, device: str, times: bool, repeats: int, grad_dir: Path) -> dict[str, Any]:
    rows = []
    for loss in LOSSES:
        for implementation in IMPLEMENTATIONS:
            row: dict[str, Any] = {"loss": loss, "implementation": implementation, "n": n, "device": device}
            try:
                step, leaf = _setup(implementation, loss, n, device)
            except ImportError as error:
                row["status"] = f"missing: {error}"
                rows.append(row)
                continue
            row.update(counts(step, leaf))
            with pairloss.checks(False):
                row["host_syncs_without_checks"] = counts(step, leaf)["host_syncs"]
            if implementation == "pairloss" and device == "cpu":  # elsewhere the default path is the sync-free one
                with _sync_free_path():
                    row.update({f"sync_free_{key}": value for key, value in counts(step, leaf).items()})
                    with pairloss.checks(False):
                        row["sync_free_host_syncs_without_checks"] = counts(step, leaf)["host_syncs"]
            del step, leaf
            if times:
                for condition in CONDITIONS:
                    params = {"n": n, "d": DIMENSION, "classes": CLASSES, "seed": 0}
                    case = Case("benchmarks.metric_losses", loss, implementation, params, condition=condition)
                    result = measure(case, repeats=repeats, time_cap=240.0, memory_cap=16 * 2**30, grad_dir=grad_dir)
                    row[f"{condition}_status"] = result.status
                    row[f"{condition}_median_s"] = result.median_s
                    row[f"{condition}_peak_bytes"] = result.peak_bytes
                    row[f"{condition}_value"] = result.value
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"n": n, "device": device, "cpus": os.cpu_count(), "torch": torch.__version__, "rows": rows}


def table(payload: dict[str, Any]) -> str:
    """pairloss against PML per loss: counts, idle and busy times and their ratios, peak memory ratio, values."""
    by_key = {(row["loss"], row["implementation"]): row for row in payload["rows"]}
    lines = [
        "| loss | | aten ops | kernels | host syncs (checks on / off) | idle time (s) | busy time (s) "
        "| peak (MiB) | value |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for loss in LOSSES:
        ours, theirs = by_key.get((loss, "pairloss")), by_key.get((loss, "pytorch-metric-learning"))
        for label, row in (("pairloss", ours), ("PML", theirs)):
            if row is None or "aten_ops" not in row:
                continue
            syncs = f"{row['host_syncs']} / {row['host_syncs_without_checks']}" if label == "pairloss" else "—"
            lines.append(
                f"| {loss} | {label} | {row['aten_ops']} | {row['kernels']} | "
                + (syncs if label == "pairloss" else str(row["host_syncs"]))
                + f" | {_number(row.get('idle_median_s'))} | {_number(row.get('busy_median_s'))} "
                f"| {_mib(row.get('idle_peak_bytes'))} | {_number(row.get('idle_value'), '.6f')} |"
            )
            if label == "pairloss" and "sync_free_kernels" in row:
                lines.append(
                    f"| {loss} | pairloss, sync-free path | {row['sync_free_aten_ops']} | {row['sync_free_kernels']} "
                    f"| {row['sync_free_host_syncs']} / {row['sync_free_host_syncs_without_checks']} | — | — | — | — |"
                )
        if ours is not None and theirs is not None and ours.get("idle_median_s") and theirs.get("idle_median_s"):
            ratios = []
            for condition in CONDITIONS:
                a, b = ours.get(f"{condition}_median_s"), theirs.get(f"{condition}_median_s")
                ratios.append(f"{b / a:.1f}×" if a and b else "—")
            memory = (
                f"{ours['idle_peak_bytes'] / theirs['idle_peak_bytes']:.3f}"
                if ours.get("idle_peak_bytes") and theirs.get("idle_peak_bytes")
                else "—"
            )
            value = (
                f"{abs(ours['idle_value'] - theirs['idle_value']) / abs(theirs['idle_value']):.1e}"
                if ours.get("idle_value") is not None and theirs.get("idle_value")
                else "—"
            )
            lines.append(
                f"| {loss} | PML / pairloss | {theirs['aten_ops'] / ours['aten_ops']:.2f}× "
                f"| {theirs['kernels'] / ours['kernels']:.2f}× | — | {ratios[0]} | {ratios[1]} "
                f"| memory {memory} | rel. diff {value} |"
            )
    return "\n".join(lines)


def _number(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_engine", description=__doc__)
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-times", action="store_true", help="counts only (no timed fresh-process runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile_engine.json")
    parser.add_argument("--docs", type=Path, help="Markdown page whose profile_engine table to regenerate")
    args = parser.parse_args(argv)
    payload = run(args.n, args.device, not args.no_times, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(table(payload))
    if args.docs is not None:
        update_docs(args.docs, "profile_engine", table(payload))


if __name__ == "__main__":
    main()
