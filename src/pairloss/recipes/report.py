"""Markdown and figures made from a ``results.json``: the results table, the verdicts, the tuning, the run.

Everything here is a pure function of the results payload, so the docs generated from a committed results file
(:mod:`pairloss.recipes.render`) are the same wherever they are regenerated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pairloss.recipes.tuning import at_bounds

__all__ = [
    "format_duration",
    "format_mean_std",
    "metrics_table",
    "plot_verdicts",
    "results_markdown",
    "run_line",
    "tuning_table",
    "verdict_counts",
    "verdict_table",
]


def format_mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (4 decimals below 10, else 2), just ``mean`` for one value, ``–`` for no value."""
    if not math.isfinite(mean):
        return "–"
    digits = 4 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def format_duration(seconds: float) -> str:
    """``1 h 02 min``, ``31 min 12 s`` or ``48 s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def metrics_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Methods × metrics, ``mean ± std`` over seeds, as a Markdown table."""
    metrics: list[str] = []
    for row in summary.values():
        metrics.extend(m for m in row if m not in metrics)
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, row in summary.items():
        cells = [format_mean_std(row[m]["mean"], row[m]["std"], int(row[m]["n"])) if m in row else "–" for m in metrics]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _signed(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:+.4f}"


def verdict_table(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """One row per (claim, metric): the mean paired difference, its 95% CI, the seeds and the verdict."""
    lines = ["| claim | metric | difference | 95% CI | seeds | verdict |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        low, high = v["ci95"]
        interval = "–" if low is None or high is None else f"[{_signed(low)}, {_signed(high)}]"
        lines.append(
            f"| {_cell(v['claim'])} | {v['metric']} | {_signed(v['difference'])} | {interval} | {v['seeds']} "
            f"| **{v['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _space(space: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name, spec in space.items():
        if spec["type"] == "choice":
            parts.append(f"{name} ∈ {{{', '.join(_value(c) for c in spec['choices'])}}}")
        else:
            scale = ", log" if spec.get("log") else ""
            parts.append(f"{name} ∈ [{_value(spec['low'])}, {_value(spec['high'])}{scale}]")
    return "; ".join(parts)


def tuning_table(tuning: Mapping[str, Mapping[str, Any]], objective: str) -> str:
    """One row per tuned method: trials, the search space, the chosen values and their validation score.

    A chosen value at an end of its range (:func:`~pairloss.recipes.tuning.at_bounds`) is marked ``(at low end)``
    or ``(at high end)``, and a line under the table says what that means for the comparison.
    """
    lines = [
        f"| method | trials | search space | chosen | {objective} |",
        "|---|---|---|---|---|",
    ]
    marked = False
    for method, entry in tuning.items():
        ends = at_bounds(entry.get("space", {}), entry.get("best", {}))
        marked = marked or bool(ends)
        chosen = (
            ", ".join(
                f"{k} = {_value(v)}" + (f" (at {ends[k]} end)" if k in ends else "")
                for k, v in entry.get("best", {}).items()
            )
            or "–"
        )
        best = entry.get("best_value")
        score = f"{best:.4f}" if isinstance(best, float) else "–"
        lines.append(f"| {_cell(method)} | {entry['trials']} | {_cell(_space(entry['space']))} | {chosen} | {score} |")
    if marked:
        lines += [
            "",
            "A value marked *at an end* was chosen within 5% of the end of its search range (of its logarithm on a "
            "log scale): that method's best setting may lie outside the range, so its row may understate it.",
        ]
    return "\n".join(lines) + "\n"


def run_line(payload: Mapping[str, Any]) -> str:
    """One sentence: mode, seeds, trials, wall time and the machine."""
    env = payload.get("environment", {})
    seeds = len(payload.get("seeds", []))
    trials = payload.get("config", {}).get("trials")
    machine = f"{env.get('cpu_count', '?')} CPU cores, {env.get('torch_threads', '?')} torch thread(s)"
    if env.get("cuda"):
        machine += f", {env['cuda']}"
    tuning = "no method tuned" if payload.get("tuning") == {} else f"{trials} tuning trials per tuned method"
    return (
        f"Mode **{payload['mode']}**, {seeds} seeds, {tuning}, wall time "
        f"{format_duration(float(payload.get('wall_seconds', 0.0)))} ({machine}; torch {env.get('torch', '?')})."
    )


def verdict_counts(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """``2 held · 1 not held · 5 inconclusive``."""
    counts = {name: sum(v["verdict"] == name for v in verdicts) for name in ("held", "not held", "inconclusive")}
    return " · ".join(f"{n} {name}" for name, n in counts.items() if n) or "no verdict"


def results_markdown(payload: Mapping[str, Any]) -> str:
    """The run line, the metrics table, the verdicts and the tuning of a results payload (``table.md``)."""
    if not payload.get("tuning"):
        tuned, tuning = "no method tuned", "Tuning: none; no method has a setting searched on the validation split.\n"
    else:
        tuned = f"tuned on the {payload.get('objective', 'validation split')}"
        tuning = "\n".join(
            [
                "Tuning: the same number of trials for every tuned method (seeded Optuna TPE on the validation split).",
                "",
                tuning_table(payload["tuning"], str(payload.get("objective", "validation score"))),
            ]
        )
    return "\n".join(
        [
            run_line(payload),
            "",
            f"Test metrics, mean ± std over seeds; {tuned}.",
            "",
            metrics_table(payload["summary"]),
            "Verdicts: the mean paired difference over seeds (treatment − control; positive favours the claim), its",
            "95% t interval, and **held** (interval above zero), **not held** (below zero) or **inconclusive**",
            "(contains zero).",
            "",
            verdict_table(payload["verdicts"]),
            tuning,
        ]
    )


def plot_verdicts(ax: Any, verdicts: Sequence[Mapping[str, Any]], metric: str | None = None) -> None:
    """A forest plot on ``ax``: each claim's mean paired difference with its 95% CI, coloured by verdict."""
    colours = {"held": "tab:green", "not held": "tab:red", "inconclusive": "tab:gray"}
    rows = [v for v in verdicts if metric is None or v["metric"] == metric]
    for i, v in enumerate(rows):
        low, high = v["ci95"]
        y = len(rows) - 1 - i
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color=colours[v["verdict"]], linewidth=2.5)
        ax.plot([v["difference"]], [y], "o", color=colours[v["verdict"]])
    ax.axvline(0.0, color="black", linewidth=0.8)
    labels = [v["claim"] if metric else f"{v['claim']} ({v['metric']})" for v in rows]
    ax.set_yticks(range(len(rows))[::-1], labels)
    ax.set_xlabel(f"paired difference{f' in {metric}' if metric else ''} (mean, 95% CI)")
    for verdict, colour in colours.items():
        ax.plot([], [], color=colour, linewidth=2.5, label=verdict)
