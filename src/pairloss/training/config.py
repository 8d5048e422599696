"""Experiment configurations for ``pairloss train``: YAML files shipped in ``pairloss/configs``, dotted overrides.

A configuration is ``configs/defaults.yaml`` (every key, with its default) merged with a named config (or any YAML
file) and then with ``KEY=VALUE`` overrides in OmegaConf's dotted syntax (``train.epochs=2``, ``model.weights=null``,
``eval.k=[1,10,100]``). Unknown keys are rejected, except under ``loss`` (the loss's arguments) and ``model.arch``
(backbone configuration fields); keys marked ``???`` must be set.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["PRECISIONS", "ConfigInfo", "config_path", "list_configs", "load_config"]

#: ``train.precision`` values: full precision, bfloat16 autocast, float16 autocast with gradient scaling.
PRECISIONS = ("32", "bf16", "16")

_DEFAULTS = "defaults"


@dataclass(frozen=True)
class ConfigInfo:
    """A shipped configuration: its name, one-line description, paper and the result the paper reports."""

    name: str
    description: str
    paper: str
    expected: str


def _configs_folder() -> Path:
    return Path(str(resources.files("pairloss") / "configs"))


def config_path(name: str | Path) -> Path:
    """The YAML file of a shipped config ``name``, or ``name`` itself when it is an existing YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    shipped = _configs_folder() / f"{name}.yaml"
    if str(name) == _DEFAULTS or not shipped.is_file():
        names = ", ".join(info.name for info in list_configs())
        raise ValueError(f"unknown config {str(name)!r}: give a YAML file or one of {names}")
    return shipped


def list_configs() -> list[ConfigInfo]:
    """Every shipped configuration, sorted by name."""
    from omegaconf import OmegaConf

    infos = []
    for path in sorted(_configs_folder().glob("*.yaml")):
        if path.stem == _DEFAULTS:
            continue
        raw: Any = OmegaConf.load(path)
        fields = (str(raw.get(key, "")) for key in ("description", "paper", "expected"))
        infos.append(ConfigInfo(path.stem, *fields))
    return infos


def _check_overrides(overrides: list[str]) -> None:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or " " in key:
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=2)")


def load_config(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The resolved configuration (an OmegaConf ``DictConfig``) of ``name`` with ``overrides`` applied.

    Raises:
        ValueError: for an unknown config, a malformed override, an unknown key, or a required key left unset.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    _check_overrides(overrides)
    path = config_path(name)
    base = OmegaConf.load(_configs_folder() / f"{_DEFAULTS}.yaml")
    OmegaConf.set_struct(base, True)
    OmegaConf.set_struct(base.loss, False)
    OmegaConf.set_struct(base.model.arch, False)
    try:
        config = OmegaConf.merge(base, OmegaConf.load(path))
    except OmegaConfBaseException as error:
        raise ValueError(f"{path}: {_message(error)}") from None
    try:
        config = OmegaConf.merge(config, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise ValueError(f"override: {_message(error)}") from None
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise ValueError(f"config {path.stem!r} leaves {', '.join(missing)} unset: give KEY=VALUE")
    config.train.precision = str(config.train.precision)
    if config.train.precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {config.train.precision!r}")
    return config


def _message(error: Exception) -> str:
    key = getattr(error, "full_key", None)
    text = str(error).splitlines()[0]
    return f"{text} ({key})" if key else text
