"""Loss modules generated from their functional forms, and the explicit registry behind ``pairloss list``.

Every loss is written once, as a function: its inputs are positional parameters, its hyper-parameters keyword-only
parameters with their defaults, its docstring holds the formula and the paper. The class decorator
:func:`loss_module` makes a class the module form of that function: its constructor takes the hyper-parameters
(same names, same defaults, positional or keyword) and stores them as attributes, and its ``forward`` takes the
inputs and calls the function with the stored values. Nothing about a loss is written twice::

    @loss_module(contrastive_loss, formula="...", paper="...", family="metric")
    class ContrastiveLoss(EmbeddingLoss):
        '''Contrastive loss: ... (see :func:`contrastive_loss`).'''

Defining a class registers nothing. A library module lists its public losses with :meth:`Registry.register`
(:data:`LOSSES` is the library's registry, read by ``pairloss list`` and the docs); a user may keep a registry of
their own.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import nn

__all__ = [
    "LOSSES",
    "BatchAxis",
    "EmbeddingLoss",
    "PairLoss",
    "Registry",
    "loss_module",
    "registered_losses",
]


@dataclass(frozen=True)
class BatchAxis:
    """Where one argument of a loss holds its samples: what a batch split over ranks is concatenated along.

    Read by :class:`pairloss.training.distributed.CrossRankLoss`, which gathers every rank's shard of each tensor
    argument into the global batch.

    Attributes:
        axis: the sample axis. A sequence of tensors (e.g. a list of views) stands for their stack along a new
            first axis, so each element's sample axis is ``axis − 1``. ``None``: the argument is not split over
            ranks (e.g. shared proxies) and is passed as it is.
        pad: the value that fills the other axes up to their largest size over the ranks (the padding convention
            of the argument, e.g. ``-1`` for the relevance of a padded list slot and ``0`` for its score);
            ``None``: the other axes must have the same size on every rank.
    """

    axis: int | None = 0
    pad: float | None = None


class PairLoss(nn.Module):
    """Base of every loss module.

    Class attributes, shown by ``pairloss list`` and the docs:

    * ``formula``: the loss in one line;
    * ``paper``: the paper that introduced it;
    * ``family``: ``metric``, ``proxy``, ``recall``, ``ranking``, ``calibrated``, ``topn``, ``multilabel``,
      ``hashing``, ``multiview``, ``polygon``, ``domain``, ``crossentropy``, ``composed``.
    """

    formula: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    family: ClassVar[str] = ""
    #: True when the value is a function of row-block engine sums only, so that
    #: :class:`pairloss.training.distributed.CrossRankLoss` can split the anchors across ranks.
    supports_cross_rank: ClassVar[bool] = False
    #: The sample axis (and padding) of each argument, by name, for a batch split over ranks; an argument not
    #: named here has its samples along axis 0 and the same size on every rank along its other axes.
    batch_axes: ClassVar[Mapping[str, BatchAxis]] = {}

    def store_options(self, *args: Any, **kwargs: Any) -> None:
        """Bind and store the hyper-parameters of the loss's function (see :func:`loss_module`)."""
        raise TypeError(f"{type(self).__name__} is not the module form of a function (see pairloss.modules)")


class EmbeddingLoss(PairLoss):
    """A loss on ``(embeddings [N, D], labels [N])``, optionally with mined pairs and a reference set.

    The call signature is pytorch-metric-learning's: ``loss(embeddings, labels, indices_tuple=None, ref_emb=None,
    ref_labels=None)``. When the reference set is omitted the batch is compared with itself and self-pairs are
    excluded.
    """


class Registry:
    """Loss classes by name. Classes are added by :meth:`register`, never by being defined."""

    def __init__(self) -> None:
        self._classes: dict[str, type[PairLoss]] = {}

    def register(self, *classes: type[PairLoss]) -> None:
        """Add loss classes under their ``__name__``; each needs a ``formula`` and a ``family``."""
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, PairLoss)):
                raise ValueError(f"only PairLoss subclasses can be registered, got {cls!r}")
            if not (cls.formula and cls.family):
                raise ValueError(f"{cls.__name__} needs a formula and a family to be registered")
            known = self._classes.get(cls.__name__)
            if known is not None and known is not cls:
                raise ValueError(f"another loss is already registered as {cls.__name__}")
            self._classes[cls.__name__] = cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __getitem__(self, name: str) -> type[PairLoss]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def by_family(self) -> dict[str, type[PairLoss]]:
        """The classes sorted by family, then name."""
        return dict(sorted(self._classes.items(), key=lambda item: (item[1].family, item[0])))


#: The library's losses (filled by :mod:`pairloss.losses` when it is imported).
LOSSES = Registry()


def registered_losses() -> dict[str, type[PairLoss]]:
    """Every public loss class of the library, by family then name."""
    import pairloss.losses  # noqa: F401  (the package registers its losses)

    return LOSSES.by_family()


_INPUT_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

_LossClass = TypeVar("_LossClass", bound=type[PairLoss])


def loss_module(
    function: Callable[..., Any],
    *,
    formula: str,
    paper: str,
    family: str,
    owned: tuple[str, ...] = (),
    check: Callable[..., None] | None = None,
    supports_cross_rank: bool = False,
) -> Callable[[_LossClass], _LossClass]:
    """Class decorator: make the decorated loss class the module form of ``function``.

    Args:
        function: the functional form; positional parameters are the inputs, keyword-only ones the
            hyper-parameters (with their defaults).
        formula, paper, family: shown by ``pairloss list`` and the docs.
        owned: inputs of ``function`` that the module holds itself (e.g. learnable proxies), read from the
            attribute of that name and not passed to ``forward``; the class's own ``__init__`` creates them. A
            class whose constructor differs from the function's hyper-parameters (PML's ``learn_beta``) defines
            ``__init__`` and ``forward`` itself and takes only the description from the decorator.
        check: called with the hyper-parameters at construction, to reject bad values early.
        supports_cross_rank: see :attr:`PairLoss.supports_cross_rank`.

    The class gets ``store_options(*args, **kwargs)``, which binds the hyper-parameters (positional in the
    function's order, or by keyword, with the function's defaults; default objects such as a similarity are copied
    per instance) and stores each as an attribute, and, unless it defines its own, an ``__init__`` that does just
    that. ``forward`` takes the inputs that are not ``owned`` and returns ``function(*inputs, **hyper_parameters)``.
    The class body holds only its docstring (and an ``__init__`` for owned parameters).
    """
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    inputs = [p for p in parameters if p.kind in _INPUT_KINDS]
    options = [p for p in parameters if p.kind == inspect.Parameter.KEYWORD_ONLY]
    missing = [p.name for p in options if p.default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"{function.__name__}: hyper-parameters need defaults, {missing} have none")
    unknown = set(owned) - {p.name for p in inputs}
    if unknown:
        raise ValueError(f"{function.__name__} has no input(s) {sorted(unknown)} to own")
    options_signature = inspect.Signature([p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in options])
    forward_inputs = [p for p in inputs if p.name not in owned]
    option_names = tuple(p.name for p in options)

    def decorate(cls: _LossClass) -> _LossClass:
        def store_options(self: PairLoss, *args: Any, **kwargs: Any) -> None:
            bound = options_signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = {
                key: _own_copy(value, signature.parameters[key].default) for key, value in bound.arguments.items()
            }
            if check is not None:
                check(**values)
            for key, value in values.items():
                setattr(self, key, value)

        def __init__(self: PairLoss, *args: Any, **kwargs: Any) -> None:
            nn.Module.__init__(self)
            store_options(self, *args, **kwargs)

        def forward(self: PairLoss, *args: Any, **kwargs: Any) -> Any:
            if len(args) > len(forward_inputs):
                raise TypeError(f"{cls.__name__}() takes {len(forward_inputs)} inputs, got {len(args)}")
            given = dict(zip((p.name for p in forward_inputs), args, strict=False))
            overlap = sorted(set(given) & set(kwargs))
            if overlap:
                raise TypeError(f"{cls.__name__}() got multiple values for {overlap}")
            given.update(kwargs)
            for key in owned:
                given[key] = getattr(self, key)
            return function(**given, **{key: getattr(self, key) for key in option_names})

        def extra_repr(self: PairLoss) -> str:
            return ", ".join(f"{key}={getattr(self, key)!r}" for key in option_names)

        self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [self_parameter, *forward_inputs], return_annotation=signature.return_annotation
        )
        if "__init__" not in cls.__dict__:
            __init__.__signature__ = options_signature.replace(  # type: ignore[attr-defined]
                parameters=[self_parameter, *options_signature.parameters.values()]
            )
            cls.__init__ = __init__  # type: ignore[assignment]
        if "forward" not in cls.__dict__:
            cls.forward = forward
            cls.extra_repr = extra_repr  # type: ignore[assignment, method-assign]
        cls.store_options = store_options  # type: ignore[method-assign]
        cls.formula, cls.paper, cls.family = formula, paper, family
        cls.supports_cross_rank = supports_cross_rank
        cls.loss_function = staticmethod(function)  # type: ignore[attr-defined]
        cls.options = option_names  # type: ignore[attr-defined]
        if not cls.__doc__:
            cls.__doc__ = _summary(function)
        return cls

    return decorate


def _own_copy(value: Any, default: Any) -> Any:
    """A default object (a similarity, a reducer) copied, so that two modules never share one; other values as is."""
    if value is default and not isinstance(default, int | float | str | bool | tuple | type(None)):
        return copy.deepcopy(default)
    return value


def _summary(function: Callable[..., Any]) -> str:
    """The first paragraph of a docstring."""
    text = inspect.getdoc(function) or ""
    return text.split("\n\n")[0].strip()
