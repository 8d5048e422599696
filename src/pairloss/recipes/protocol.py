"""The experiment protocol every recipe follows: splits, equal-budget tuning, paired seeds, verdicts with a CI.

A recipe is an :class:`Experiment`: compared :class:`Method` s, the :class:`Claim` s to judge, and three functions
(``prepare``, ``run``, ``make_figure``). :func:`run_experiment` runs it the same way for every recipe:

1. **Data, once.** ``prepare(PrepareContext) -> Splits`` builds the fit, validation and test splits (the
   validation split carved from the training side: held-out training classes for open-set retrieval, held-out
   requests, queries or samples elsewhere). The same data serve every seed and every method.
2. **Equal-budget tuning on the validation split.** Every method with a search space gets ``config["trials"]``
   trials of a seeded Optuna search (:func:`pairloss.recipes.tuning.tune`) maximising the validation metric
   ``Experiment.objective``; each trial is one ``run`` in phase ``"tuning"``, whose context has **no test
   split** (``ctx.data.test is None``). A method with ``tuned_as`` is a variant of another one (the same loss
   with a factor changed: a larger batch, SiMix, a pretrained start) and uses that method's chosen values, so a
   factor is compared with everything else fixed. All trials of all methods use the seed :data:`TUNING_SEED`,
   which no final run uses.
3. **Final runs on paired seeds.** For seeds ``0 .. n−1`` (``n >= 5`` in full mode), every method runs once in
   phase ``"final"`` with its tuned values. The runner seeds torch, numpy and ``random`` with the seed right
   before each run, so a recipe that builds its model first gives every method of a seed the same
   initialisation, and the same batches where the batch source is seeded with ``ctx.seed``. ``run`` trains on
   the fit split (with :func:`pairloss.training.fit`: a budget of optimiser updates, the state selected on the
   validation split) and returns the metrics of the **test** split (``ctx.evaluation``), touched once.
4. **Verdicts.** Each claim ("``treatment`` is better than ``control``") is judged on each of its metrics from
   the paired per-seed differences (:func:`pairloss.recipes.stats.paired_comparison`): the mean difference, its
   95% t interval, and ``held`` / ``not held`` / ``inconclusive``.

Everything goes to ``OUT/NAME/results.json`` (see :data:`RESULTS_KEYS`; ``"verdicts"``, ``"tuning"`` and
``"mode"`` are the contract), ``table.md`` and ``figure.png``. The file is rewritten after every trial and every
final run; running the same command again with the same configuration resumes (finished trials and runs are
kept, an interrupted training run continues from its checkpoint in ``OUT/NAME/checkpoints``), and the wall time
adds up over the sessions. ``OUT/NAME/cache`` holds what ``prepare`` chooses to keep (e.g. a pretrained
checkpoint).

Compared at equal optimiser updates: the recipes give every method and every factor the same budget of updates
(``fit``'s ``FitConfig.updates``); where a claim is about cost, a recipe adds a method at equal compute and says so
in its docs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pairloss.recipes.results_file import read_previous, set_aside
from pairloss.recipes.stats import mean_interval, paired_comparison
from pairloss.recipes.tuning import Param, TrialRecord, space_to_json, tune
from pairloss.training.loop import torch_threads
from pairloss.training.reporting import Reporter

__all__ = [
    "MIN_FULL_SEEDS",
    "RESULTS_KEYS",
    "TUNING_SEED",
    "Claim",
    "Experiment",
    "ExperimentResult",
    "Method",
    "PrepareContext",
    "RunContext",
    "RunResult",
    "Splits",
    "cache_key",
    "run_experiment",
]

#: The fewest seeds of a full run.
MIN_FULL_SEEDS = 5
#: The seed of every tuning trial (final runs use seeds 0, 1, 2, ...).
TUNING_SEED = 10_000
#: Version of the results format; a results file of another version is not resumed.
PROTOCOL_VERSION = 1
#: The top-level keys of ``results.json``.
RESULTS_KEYS = (
    "protocol",
    "name",
    "title",
    "paper",
    "claim",
    "mode",
    "seeds",
    "wall_seconds",
    "wall_seconds_by_phase",
    "config",
    "environment",
    "data",
    "objective",
    "methods",
    "tuning",
    "per_seed",
    "summary",
    "verdicts",
)

Phase = Literal["tuning", "final"]
Metrics = dict[str, float]


def cache_key(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """A short hash of the configuration values ``keys``: names a cached artefact (rendered data, a pretrained
    checkpoint) that those values, and no others, determine, so that a change to any of them makes a new one."""
    text = json.dumps({k: config[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolve_config(
    name: str, config: Mapping[str, Any], quick: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``config`` updated with ``quick`` and then ``overrides``, whose keys must all be known."""
    resolved = {**config, **quick}
    if overrides:
        unknown = set(overrides) - set(resolved)
        if unknown:
            raise ValueError(f"unknown config keys for recipe {name!r}: {sorted(unknown)}")
        resolved.update(overrides)
    return resolved


class OutputFiles:
    """The three files a recipe run writes in ``out_dir``."""

    out_dir: Path

    @property
    def results_path(self) -> Path:
        return self.out_dir / "results.json"

    @property
    def table_path(self) -> Path:
        return self.out_dir / "table.md"

    @property
    def figure_path(self) -> Path:
        return self.out_dir / "figure.png"


@dataclass(frozen=True)
class Method:
    """One compared method (a row of the results table).

    Attributes:
        name: the row's name (also the key in ``results.json``).
        space: the settings searched on the validation split (``{}``: nothing to tune, or ``tuned_as``).
        settings: fixed settings given to ``run`` (e.g. the loss, the batch size, a factor switched on).
        tuned_as: the name of the method whose chosen values this one uses (a variant differing only in
            ``settings``); its ``space`` must then be empty.
        description: one line for the docs.
    """

    name: str
    space: Mapping[str, Param] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    tuned_as: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Claim:
    """A claim "``treatment`` is better than ``control``", judged on each of ``metrics`` over paired seeds."""

    claim: str
    treatment: str
    control: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """The data of an experiment: ``fit`` (trained on), ``validation`` (tuning, early stopping), ``test``.

    The three can be anything the recipe's ``run`` understands. ``info`` is a JSON-able description of the data
    (classes, sizes, sources) written into ``results.json``.
    """

    fit: Any
    validation: Any
    test: Any
    info: Mapping[str, Any] = field(default_factory=dict)

    def without_test(self) -> Splits:
        return Splits(self.fit, self.validation, None, self.info)


@dataclass(frozen=True)
class PrepareContext:
    """What ``prepare`` gets: the configuration, a cache folder that survives a resume, the progress reporter."""

    config: Mapping[str, Any]
    cache_dir: Path
    reporter: Reporter
    quick: bool


@dataclass(frozen=True)
class RunContext:
    """What ``run`` gets for one training run (a tuning trial or a final run).

    Attributes:
        config: the experiment's configuration.
        data: the splits; ``data.test`` is ``None`` in the tuning phase.
        method: the method's name.
        settings: the method's fixed settings updated with the tuned (or trial's) values.
        seed: the run's seed (the runner has already seeded torch, numpy and ``random`` with it).
        phase: ``"tuning"`` or ``"final"``.
        checkpoint: the file to give :func:`pairloss.training.fit` (resume of an interrupted run).
        reporter: the progress display.
        label: a short description of the run for progress bars ("RS@k: seed 3", "tuning RS@k: trial 2/12").
    """

    config: Mapping[str, Any]
    data: Splits
    method: str
    settings: Mapping[str, Any]
    seed: int
    phase: Phase
    checkpoint: Path
    reporter: Reporter
    label: str = ""

    @property
    def evaluation(self) -> Any:
        """The split to report metrics on: validation while tuning, test in a final run."""
        return self.data.validation if self.phase == "tuning" else self.data.test


@dataclass
class RunResult:
    """What ``run`` returns: metrics on ``ctx.evaluation`` and JSON-able extras (curves for the figure, ...)."""

    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One paper's reproduction on the shared protocol (see the module docstring).

    Attributes:
        name: the CLI name (``pairloss reproduce NAME``).
        title: one line for ``pairloss reproduce --list``.
        paper: the paper reproduced.
        claim: the paper's claim tested, in one sentence.
        config: the full-mode configuration; must hold ``trials`` (the tuning budget per method).
        quick: overrides for ``--quick`` (a run of a few minutes; its verdicts are not published).
        methods: the compared methods.
        claims: the claims judged.
        prepare: ``PrepareContext -> Splits``.
        run: ``RunContext -> RunResult``.
        make_figure: ``(ExperimentResult, path) -> None`` writes the PNG.
        objective: the validation metric (a key of ``run``'s metrics) that tuning maximises.
        lower_is_better: metrics that improve downwards (their claimed difference is control − treatment).
        seeds: seeds of a full run (at least :data:`MIN_FULL_SEEDS`).
        quick_seeds: seeds of a quick run.
        tables: how the docs show the test metrics: ``(title, metrics)`` pairs, one table each with those columns
            (empty: one table with every metric).
    """

    name: str
    title: str
    paper: str
    claim: str
    config: Mapping[str, Any]
    quick: Mapping[str, Any]
    methods: tuple[Method, ...]
    claims: tuple[Claim, ...]
    prepare: Callable[[PrepareContext], Splits]
    run: Callable[[RunContext], RunResult]
    make_figure: Callable[[ExperimentResult, Path], None]
    objective: str
    lower_is_better: frozenset[str] = frozenset()
    seeds: int = MIN_FULL_SEEDS
    quick_seeds: int = 2
    tables: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: method names must be unique, got {names}")
        by_name = {m.name: m for m in self.methods}
        for method in self.methods:
            if method.tuned_as is not None:
                if method.space:
                    raise ValueError(f"{self.name}: {method.name!r} has tuned_as and its own space; give one")
                if method.tuned_as not in by_name or not by_name[method.tuned_as].space:
                    raise ValueError(f"{self.name}: {method.name!r} is tuned as {method.tuned_as!r}, no tuned method")
        for claim in self.claims:
            for side in (claim.treatment, claim.control):
                if side not in by_name:
                    raise ValueError(f"{self.name}: claim {claim.claim!r} names unknown method {side!r}")
            if not claim.metrics:
                raise ValueError(f"{self.name}: claim {claim.claim!r} has no metric")
        if "trials" not in self.config:
            raise ValueError(f"{self.name}: config needs 'trials' (the tuning budget per method)")
        if self.seeds < MIN_FULL_SEEDS:
            raise ValueError(f"{self.name}: a full run needs >= {MIN_FULL_SEEDS} seeds, got {self.seeds}")

    def resolve_config(self, quick: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The configuration of a run: defaults, then the quick overrides, then explicit overrides."""
        return resolve_config(self.name, self.config, self.quick if quick else {}, overrides)

    @property
    def tuned_methods(self) -> list[Method]:
        return [m for m in self.methods if m.space]


@dataclass
class ExperimentResult(OutputFiles):
    """A finished (or partial) run: the content of ``results.json`` and where the files are."""

    payload: dict[str, Any]
    out_dir: Path

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.payload["config"])

    @property
    def mode(self) -> str:
        return str(self.payload["mode"])

    @property
    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        return dict(self.payload["summary"])

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return list(self.payload["verdicts"])

    @property
    def tuning(self) -> dict[str, dict[str, Any]]:
        return dict(self.payload["tuning"])

    @property
    def per_seed(self) -> dict[int, dict[str, dict[str, Any]]]:
        """``{seed: {method: {"metrics": ..., "extra": ...}}}``."""
        return {int(s): runs for s, runs in self.payload["per_seed"].items()}

    def mean_ci(self, method: str, metric: str) -> tuple[float, float]:
        """``method``'s mean ``metric`` over the seeds and the half-width of its 95% t interval (figures' bars)."""
        return mean_interval([runs[method]["metrics"][metric] for runs in self.per_seed.values() if method in runs])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=float))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (code that draws from numpy's global generator stays seeded)
    random.seed(seed)


def aggregate(per_seed: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample standard deviation and count of every (method, metric) over seeds (NaNs skipped)."""
    values: dict[str, dict[str, list[float]]] = {}
    for runs in per_seed.values():
        for method, run in runs.items():
            for metric, value in run["metrics"].items():
                values.setdefault(method, {}).setdefault(metric, []).append(float(value))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method, metrics in values.items():
        summary[method] = {}
        for metric, vals in metrics.items():
            finite = np.array([v for v in vals if math.isfinite(v)], dtype=float)
            summary[method][metric] = {
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                "n": int(finite.size),
            }
    return summary


def judge(
    claims: Sequence[Claim],
    per_seed: Mapping[str, Mapping[str, Mapping[str, Any]]],
    lower_is_better: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The verdict of every (claim, metric) from the seeds on which both methods finished."""
    verdicts = []
    for claim in claims:
        for metric in claim.metrics:
            seeds = sorted(
                (int(s) for s, runs in per_seed.items() if claim.treatment in runs and claim.control in runs),
            )
            treatment = [per_seed[str(s)][claim.treatment]["metrics"][metric] for s in seeds]
            control = [per_seed[str(s)][claim.control]["metrics"][metric] for s in seeds]
            comparison = paired_comparison(treatment, control, lower_is_better=metric in lower_is_better)
            verdicts.append(
                {
                    "claim": claim.claim,
                    "metric": metric,
                    "difference": comparison.difference,
                    "ci95": list(comparison.ci95),
                    "seeds": comparison.seeds,
                    "verdict": comparison.verdict,
                    "treatment": claim.treatment,
                    "control": claim.control,
                    "differences": list(comparison.differences),
                }
            )
    return verdicts


def environment() -> dict[str, Any]:
    """Where a result was measured."""
    import os
    import platform

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _resumable(path: Path, experiment: Experiment, config: Mapping[str, Any], mode: str) -> dict[str, Any] | None:
    saved = read_previous(path)
    if saved is None:
        return None
    same = (
        saved.get("protocol") == PROTOCOL_VERSION
        and saved.get("name") == experiment.name
        and saved.get("mode") == mode
        and saved.get("config") == _jsonable(config)
    )
    if not same:
        set_aside(path, "was written by another protocol version, recipe, mode or configuration")
        # the training checkpoints of that run would resume another configuration's model: start those afresh
        for stale in (path.parent / "checkpoints").glob("*.pt"):
            stale.unlink()
    return saved if same else None


class _Run:
    """The state of one :func:`run_experiment` call, written to ``results.json`` after every step."""

    def __init__(
        self, experiment: Experiment, config: dict[str, Any], mode: str, seeds: list[int], out_dir: Path
    ) -> None:
        self.experiment = experiment
        self.config = config
        self.out_dir = out_dir
        saved = _resumable(out_dir / "results.json", experiment, config, mode) or {}
        self.resumed = bool(saved)
        self.payload: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "name": experiment.name,
            "title": experiment.title,
            "paper": experiment.paper,
            "claim": experiment.claim,
            "mode": mode,
            "seeds": seeds,
            "wall_seconds": float(saved.get("wall_seconds", 0.0)),
            "wall_seconds_by_phase": dict(saved.get("wall_seconds_by_phase", {})),
            "config": _jsonable(config),
            "environment": environment(),
            "data": saved.get("data", {}),
            "objective": f"validation {experiment.objective}",
            "methods": {
                m.name: {
                    "settings": _jsonable(dict(m.settings)),
                    "tuned_as": m.tuned_as or (m.name if m.space else None),
                    "description": m.description,
                }
                for m in experiment.methods
            },
            "tuning": saved.get("tuning", {}),
            "per_seed": saved.get("per_seed", {}),
            "summary": {},
            "verdicts": [],
        }
        self._phase_start = time.perf_counter()
        self._phase = "prepare"

    def enter(self, phase: str) -> None:
        """Charge the time since the last call to the current phase, then switch to ``phase``."""
        now = time.perf_counter()
        spent = now - self._phase_start
        by_phase = self.payload["wall_seconds_by_phase"]
        by_phase[self._phase] = float(by_phase.get(self._phase, 0.0)) + spent
        self.payload["wall_seconds"] = float(self.payload["wall_seconds"]) + spent
        self._phase_start, self._phase = now, phase

    def write(self) -> None:
        self.enter(self._phase)
        per_seed = {s: self.payload["per_seed"][s] for s in sorted(self.payload["per_seed"], key=int)}
        self.payload["per_seed"] = per_seed
        self.payload["summary"] = aggregate(per_seed)
        self.payload["verdicts"] = judge(self.experiment.claims, per_seed, self.experiment.lower_is_better)
        path = self.out_dir / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_jsonable(self.payload), indent=2))
        tmp.replace(path)


def _context(
    experiment: Experiment,
    config: dict[str, Any],
    data: Splits,
    method: Method,
    settings: Mapping[str, Any],
    seed: int,
    phase: Phase,
    out_dir: Path,
    reporter: Reporter,
) -> RunContext:
    checkpoint = out_dir / "checkpoints" / f"{phase}-{_slug(method.name)}-{seed}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return RunContext(
        config=config,
        data=data.without_test() if phase == "tuning" else data,
        method=method.name,
        settings=dict(settings),
        seed=seed,
        phase=phase,
        checkpoint=checkpoint,
        reporter=reporter,
        label=f"{method.name}: seed {seed}",
    )


def _tune_method(state: _Run, method: Method, data: Splits, trials: int, reporter: Reporter) -> dict[str, Any]:
    """Run (or finish) the search of ``method``; returns its ``tuning`` entry."""
    experiment, config = state.experiment, state.config
    space = space_to_json(method.space)
    saved = state.payload["tuning"].get(method.name)
    records = (
        [TrialRecord(t["params"], t["value"]) for t in saved["history"]]
        if saved and saved.get("space") == _jsonable(space)
        else []
    )
    if saved and saved.get("best") and len(records) >= trials:
        return dict(saved)

    def objective(params: dict[str, Any]) -> float:
        _seed_everything(TUNING_SEED)
        settings = {**method.settings, **params}
        trial = len(records) + 1
        ctx = _context(experiment, config, data, method, settings, TUNING_SEED, "tuning", state.out_dir, reporter)
        ctx = replace(ctx, label=f"tuning {method.name}: trial {trial}/{trials}")
        metrics = experiment.run(ctx).metrics
        if experiment.objective not in metrics:
            raise KeyError(f"{experiment.name}: run returned no {experiment.objective!r} (got {sorted(metrics)})")
        return float(metrics[experiment.objective])

    def save(record: TrialRecord) -> None:
        records.append(record)
        state.payload["tuning"][method.name] = {
            "trials": trials,
            "space": space,
            "best": {},
            "best_value": None,
            "history": [r.to_json() for r in records],
        }
        state.write()

    result = tune(objective, method.space, trials, seed=TUNING_SEED, history=list(records), on_trial=save)
    entry = result.to_json()
    state.payload["tuning"][method.name] = entry
    state.write()
    return entry


def run_experiment(
    experiment: Experiment,
    *,
    out: Path | str = "results",
    seeds: int | None = None,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> ExperimentResult:
    """Run (or resume) ``experiment``: tuning, final runs on paired seeds, verdicts, table and figure.

    Args:
        experiment: the recipe.
        out: results go to ``out/NAME/`` (``results.json``, ``table.md``, ``figure.png``).
        seeds: number of seeds (default: ``experiment.seeds``, or ``experiment.quick_seeds`` when quick); a full run
            needs at least :data:`MIN_FULL_SEEDS`.
        quick: the quick configuration (mode ``"quick"``).
        overrides: configuration keys to change (tests); they keep the mode.
        reporter: progress display (default: silent).
    """
    from pairloss.recipes.report import results_markdown

    n_seeds = seeds if seeds is not None else (experiment.quick_seeds if quick else experiment.seeds)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    if not quick and n_seeds < MIN_FULL_SEEDS:
        raise ValueError(f"a full run needs >= {MIN_FULL_SEEDS} seeds, got {n_seeds} (use --quick for fewer)")
    reporter = reporter or Reporter()
    config = experiment.resolve_config(quick, overrides)
    trials = int(config["trials"])
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    out_dir = Path(out) / experiment.name
    (out_dir / "cache").mkdir(parents=True, exist_ok=True)
    with torch_threads(config.get("threads")):  # first, so that the recorded environment has the run's threads
        state = _Run(experiment, config, "quick" if quick else "full", list(range(n_seeds)), out_dir)
        if state.resumed:
            reporter.log(f"{experiment.name}: resuming from {out_dir / 'results.json'}")
        _seed_everything(0)
        data = experiment.prepare(PrepareContext(config, out_dir / "cache", reporter, quick))
        state.payload["data"] = _jsonable(dict(data.info))
        state.enter("tuning")
        chosen: dict[str, dict[str, Any]] = {}
        for method in experiment.tuned_methods:
            chosen[method.name] = _tune_method(state, method, data, trials, reporter)["best"]
        state.enter("final")
        todo = [
            (seed, method)
            for seed in range(n_seeds)
            for method in experiment.methods
            if method.name not in state.payload["per_seed"].get(str(seed), {})
        ]
        for seed, method in reporter.track(todo, f"{experiment.name}: final runs", total=len(todo)):
            tuned = chosen.get(method.tuned_as or method.name, {})
            _seed_everything(seed)
            ctx = _context(
                experiment, config, data, method, {**method.settings, **tuned}, seed, "final", out_dir, reporter
            )
            outcome = experiment.run(ctx)
            state.payload["per_seed"].setdefault(str(seed), {})[method.name] = {
                "metrics": {k: float(v) for k, v in outcome.metrics.items()},
                "extra": _jsonable(outcome.extra),
            }
            state.write()
        state.enter("report")
        state.write()
    result = ExperimentResult(state.payload, out_dir)
    result.table_path.write_text(results_markdown(state.payload))
    experiment.make_figure(result, result.figure_path)
    return result
