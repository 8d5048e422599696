"""Equal-budget hyper-parameter search: a seeded Optuna search over a documented space, on the validation split.

Every compared method of a recipe gets the same number of trials. A search space is a mapping from a setting's
name to one of :class:`Float`, :class:`Int` or :class:`Choice`; it is written into ``results.json`` as it is
(:func:`space_to_json`) together with every trial and the chosen values.

The sampler is Optuna's TPE, seeded, with the first ``startup_trials`` trials drawn at random (a third of the
budget, at least two, by default). A search that was interrupted resumes: the finished trials are given back
(``history``) and only the missing ones run; its later suggestions may differ from an uninterrupted search's,
since the sampler's random state is not saved.

Optuna is an optional dependency (the ``recipes`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Choice",
    "Float",
    "Int",
    "Param",
    "TrialRecord",
    "TuningResult",
    "at_bounds",
    "space_to_json",
    "tune",
]


@dataclass(frozen=True)
class Float:
    """A real setting in ``[low, high]``, searched on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Float needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale Float needs low > 0, got {self.low}")

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Int:
    """An integer setting in ``[low, high]`` (both included), searched on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Int needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale Int needs low > 0, got {self.low}")

    def suggest(self, trial: Any, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high, log=self.log))

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """One of a few values (numbers, strings, booleans)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"Choice needs at least two values, got {self.choices}")

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def to_json(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.choices)}


Param = Float | Int | Choice


def space_to_json(space: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    """The search space as JSON: ``{name: {"type": ..., "low": ..., "high": ..., "log": ...}}``."""
    return {name: param.to_json() for name, param in space.items()}


#: A chosen value within this fraction of its range (of its logarithm on a log scale) from an end is "at a bound".
BOUND_FRACTION = 0.05


def at_bounds(
    space: Mapping[str, Mapping[str, Any]], best: Mapping[str, Any], fraction: float = BOUND_FRACTION
) -> dict[str, str]:
    """The chosen values that lie at an end of their search range: ``{name: "low" | "high"}``.

    A search whose best value sits at a bound may have its true optimum outside the range, so the comparison it
    feeds is less fair to that method than the budget suggests. ``space`` is the JSON form (:func:`space_to_json`),
    so a committed ``results.json`` can be checked as it is. A number counts as at a bound when it lies within
    ``fraction`` of the range (of the logarithm of the range on a log scale) of an end; choices are never at a bound.
    """
    found: dict[str, str] = {}
    for name, param in space.items():
        if param.get("type") not in ("float", "int") or name not in best:
            continue
        low, high, value = float(param["low"]), float(param["high"]), float(best[name])
        if param.get("log"):
            low, high, value = math.log(low), math.log(high), math.log(value)
        position = (value - low) / (high - low)
        if position <= fraction:
            found[name] = "low"
        elif position >= 1.0 - fraction:
            found[name] = "high"
    return found


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial: the values it tried and the validation score it got (``None``: not finite)."""

    params: dict[str, Any]
    value: float | None

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "value": self.value}


@dataclass
class TuningResult:
    """A finished search: its budget, space, every trial and the chosen (best) values.

    Its JSON form adds ``at_bound``: the chosen values at an end of their range (:func:`at_bounds`).
    """

    trials: int
    space: dict[str, dict[str, Any]]
    best: dict[str, Any]
    best_value: float
    history: list[TrialRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "space": self.space,
            "best": self.best,
            "best_value": self.best_value,
            "at_bound": at_bounds(self.space, self.best),
            "history": [t.to_json() for t in self.history],
        }


def tune(
    objective: Callable[[dict[str, Any]], float],
    space: Mapping[str, Param],
    trials: int,
    *,
    seed: int = 0,
    startup_trials: int | None = None,
    history: Sequence[TrialRecord] = (),
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuningResult:
    """Maximise ``objective(params)`` over ``space`` with ``trials`` trials of a seeded TPE search.

    Args:
        objective: ``params -> validation score`` (higher is better); a non-finite score marks the trial failed.
        space: the search space (a non-empty mapping of names to :class:`Float`, :class:`Int`, :class:`Choice`).
        trials: the budget (the same for every compared method).
        seed: the sampler's seed.
        startup_trials: random trials before TPE takes over (default ``max(2, trials // 3)``).
        history: trials finished earlier (a resumed search); only ``trials − len(history)`` more run.
        on_trial: called after every new trial (e.g. to save progress).

    Returns:
        The budget, the space, every trial and the best values.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not space:
        raise ValueError("space is empty: a method without settings to tune needs no search")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = max(2, trials // 3) if startup_trials is None else startup_trials
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    distributions = {name: param.distribution() for name, param in space.items()}
    records = list(history[:trials])
    for record in records:
        study.add_trial(
            optuna.trial.create_trial(
                params=record.params,
                distributions=distributions,
                value=record.value,
                state=optuna.trial.TrialState.COMPLETE if record.value is not None else optuna.trial.TrialState.FAIL,
            )
        )
    for _ in range(trials - len(records)):
        trial = study.ask()
        params = {name: param.suggest(trial, name) for name, param in space.items()}
        score = float(objective(dict(params)))
        value = score if math.isfinite(score) else None
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
        record = TrialRecord(params, value)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
    finished = [r for r in records if r.value is not None]
    if not finished:
        raise RuntimeError(f"all {trials} trials gave a non-finite validation score: nothing to choose from")
    best = max(finished, key=lambda r: r.value if r.value is not None else -math.inf)
    assert best.value is not None
    return TuningResult(trials, space_to_json(space), dict(best.params), best.value, records)
