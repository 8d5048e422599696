"""Compare pairloss with its peers case by case, and write the JSON results and the Markdown table."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.measure import Measurement

BASELINE = "pairloss"
VALUE_TOLERANCE = 1e-5
#: How peers are named in the table headers.
SHORT_NAMES = {"pytorch-metric-learning": "PML"}


def _key(measurement: Measurement) -> tuple[str, str, str]:
    return measurement.case.loss, json.dumps(measurement.case.params, sort_keys=True), measurement.case.condition


def _gradient_difference(ours: Measurement, theirs: Measurement) -> float | None:
    if ours.grad_file is None or theirs.grad_file is None:
        return None
    a, b = np.load(ours.grad_file).astype(np.float64), np.load(theirs.grad_file).astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def compare(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """One row per (loss, size, peer): times, peaks, speed-up, memory ratio and agreement of the values.

    ``speedup = t_peer / t_pairloss``; ``memory_ratio = peak_pairloss / peak_peer``; ``value_rel_diff =
    |L_pairloss − L_peer| / |L_peer|``; ``grad_rel_diff = max|g_pairloss − g_peer| / max|g_peer|``. A ratio is
    ``None`` when either side did not finish.
    """
    ours = {_key(m): m for m in measurements if m.case.implementation == BASELINE}
    rows = []
    for peer in measurements:
        if peer.case.implementation == BASELINE:
            continue
        mine = ours.get(_key(peer))
        if mine is None:
            continue
        row: dict[str, Any] = {
            "loss": peer.case.loss,
            **peer.case.params,
            "condition": peer.case.condition,
            "peer": peer.case.implementation,
        }
        for side, m in (("pairloss", mine), ("peer", peer)):
            row[f"{side}_status"] = m.status
            row[f"{side}_median_s"] = m.median_s
            row[f"{side}_peak_bytes"] = m.peak_bytes
            row[f"{side}_value"] = m.value
            row[f"{side}_message"] = m.message
        both = mine.status == "ok" and peer.status == "ok"
        row["speedup"] = peer.median_s / mine.median_s if both and mine.median_s and peer.median_s else None
        row["memory_ratio"] = (
            mine.peak_bytes / peer.peak_bytes if both and mine.peak_bytes and peer.peak_bytes else None
        )
        if both and mine.value is not None and peer.value is not None:
            row["value_rel_diff"] = abs(mine.value - peer.value) / max(abs(peer.value), 1e-30)
            row["values_agree"] = row["value_rel_diff"] <= VALUE_TOLERANCE
        else:
            row["value_rel_diff"] = row["values_agree"] = None
        row["grad_rel_diff"] = _gradient_difference(mine, peer)
        rows.append(row)
    return rows


def environment() -> dict[str, Any]:
    """The machine and library versions the numbers were measured on."""
    try:
        from importlib.metadata import version

        pml = version("pytorch-metric-learning")
    except Exception:
        pml = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_metric_learning": pml,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "load_average_at_start": os.getloadavg(),
    }


def write_json(path: Path, name: str, title: str, settings: dict[str, Any], measurements: list[Measurement]) -> None:
    """``path``: settings, environment, every raw measurement and the comparison rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "title": title,
        "settings": settings,
        "environment": environment(),
        "measurements": [asdict(m) | {"grad_file": None} for m in measurements],
        "comparisons": compare(measurements),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _seconds(status: str, value: float | None) -> str:
    if status == "ok" and value is not None:
        return f"{value:.3f}"
    return "—" if status == "missing" else status.upper()


def _megabytes(status: str, value: int | None) -> str:
    return f"{value / 2**20:,.0f}" if status == "ok" and value is not None else "—"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a Markdown table (failed runs shown as OOM / TIMEOUT / SKIPPED)."""
    peers = sorted({SHORT_NAMES.get(row["peer"], row["peer"]) for row in rows})
    peer = peers[0] if len(peers) == 1 else "peer"
    conditions = len({row.get("condition", "idle") for row in rows}) > 1
    lines = [
        f"| loss | N |{' machine |' if conditions else ''} pairloss time (s) | {peer} time (s) "
        f"| speed-up ({peer}/pairloss) | pairloss peak (MiB) "
        f"| {peer} peak (MiB) | memory (pairloss/{peer}) | value rel. diff | grad rel. diff |",
        "|---|---:|" + ("---|" if conditions else "") + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda row: (row["loss"], row.get("n", 0), row.get("condition", "idle") != "idle")):
        speedup = f"{row['speedup']:.1f}×" if row["speedup"] is not None else "—"
        memory = f"{row['memory_ratio']:.3f}" if row["memory_ratio"] is not None else "—"
        value = f"{row['value_rel_diff']:.1e}" if row["value_rel_diff"] is not None else "—"
        grad = f"{row['grad_rel_diff']:.1e}" if row["grad_rel_diff"] is not None else "—"
        lines.append(
            f"| {row['loss']} | {row['n']} "
            + (f"| {row.get('condition', 'idle')} " if conditions else "")
            + f"| {_seconds(row['pairloss_status'], row['pairloss_median_s'])} "
            f"| {_seconds(row['peer_status'], row['peer_median_s'])} | {speedup} "
            f"| {_megabytes(row['pairloss_status'], row['pairloss_peak_bytes'])} "
            f"| {_megabytes(row['peer_status'], row['peer_peak_bytes'])} | {memory} | {value} | {grad} |"
        )
    return "\n".join(lines)


def update_docs(path: Path, name: str, table: str) -> None:
    """Replace the block between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` (or
    append it). Only the lines between the two markers change: the prose around them is left as written.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{table}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
