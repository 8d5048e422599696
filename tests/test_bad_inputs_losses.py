"""Bad inputs to every loss: a ``ValueError`` naming the argument, never a bare torch error, a silent NaN or a
wrong number.

The losses come from the registry behind ``pairloss list``, so a new loss is swept as soon as it exists. Each is
built with valid hyper-parameters and called on valid inputs chosen by its ``forward`` signature (a signature not
described in :data:`INPUTS` fails ``test_every_loss_has_valid_inputs``); then one argument at a time is broken
(NaN, inf, a dimension more or less, another dtype, not a tensor, empty, a wrong length) and each constructor
hyper-parameter that must be positive is set to 0 and to a negative value.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from pairloss.losses.base import PairLoss, registered_losses
from pairloss.losses.color import rgb_to_lab
from pairloss.losses.polygon import box_crops

LOSSES = registered_losses()


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _embedding_inputs() -> dict[str, Any]:
    return {"embeddings": torch.randn(16, 8, dtype=torch.float64, generator=_generator()), "labels": CLASS_IDS}


CLASS_IDS = torch.arange(4).repeat_interleave(4)
CLICKS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
GROUPS = torch.arange(3).repeat_interleave(4)
RELEVANCE = torch.tensor([[2.0, 0.0, 1.0, 0.0, -1.0], [1.0, 0.0, 3.0, 0.0, 2.0], [0.0, 1.0, 0.0, -1.0, -1.0]])
BOXES = torch.tensor([[4.0, 4.0, 20.0, 18.0], [10.0, 2.0, 28.0, 26.0]], dtype=torch.float64)


def _polygons() -> Tensor:
    angles = torch.linspace(0, 2 * math.pi, 9, dtype=torch.float64)[:-1]
    centre, radius = (BOXES[:, :2] + BOXES[:, 2:]) / 2, (BOXES[:, 2:] - BOXES[:, :2]) / 2.5
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    return centre[:, None, :] + radius[:, None, :] * circle[None]


def _masks() -> Tensor:
    return torch.rand(2, 12, 12, dtype=torch.float64, generator=_generator())


def _images() -> Tensor:
    return torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=_generator())


#: Valid inputs for each ``forward`` signature (its parameter names), and the role of each swept argument.
INPUTS: dict[tuple[str, ...], Callable[[], tuple[dict[str, Any], dict[str, str]]]] = {
    ("embeddings", "labels", "ref_emb", "ref_labels"): lambda: (
        _embedding_inputs(),
        {"embeddings": "float", "labels": "class_ids"},
    ),
    ("embeddings", "labels", "indices_tuple", "ref_emb", "ref_labels"): lambda: (
        _embedding_inputs(),
        {"embeddings": "float", "labels": "class_ids"},
    ),
    ("embeddings", "labels"): lambda: (_embedding_inputs(), {"embeddings": "float", "labels": "class_ids"}),
    ("logits", "labels", "group_ids"): lambda: (
        {"logits": torch.randn(12, dtype=torch.float64, generator=_generator()), "labels": CLICKS, "group_ids": GROUPS},
        {"logits": "float", "labels": "labels", "group_ids": "labels"},
    ),
    ("logits", "labels", "ref_scores", "ref_labels"): lambda: (
        {
            "logits": torch.randn(12, dtype=torch.float64, generator=_generator()),
            "labels": CLICKS,
            "ref_scores": torch.randn(12, 3, dtype=torch.float64, generator=_generator()),
            "ref_labels": CLICKS.view(4, 3).repeat(3, 1),
        },
        {"logits": "float", "labels": "labels", "ref_scores": "float"},
    ),
    ("logits", "labels", "ref_scores", "ref_labels", "calibrated"): lambda: (
        {
            "logits": torch.randn(12, dtype=torch.float64, generator=_generator()),
            "labels": CLICKS,
            "ref_scores": torch.randn(12, 3, dtype=torch.float64, generator=_generator()),
            "ref_labels": CLICKS.view(4, 3).repeat(3, 1),
            "calibrated": torch.rand(12, dtype=torch.float64, generator=_generator()) * 0.8 + 0.1,
        },
        {"logits": "float", "labels": "labels", "calibrated": "float"},
    ),
    ("sim_embeddings", "real_embeddings"): lambda: (
        {
            "sim_embeddings": torch.randn(8, 6, dtype=torch.float64, generator=_generator()),
            "real_embeddings": torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        },
        {"sim_embeddings": "float", "real_embeddings": "float"},
    ),
    ("scores", "labels"): lambda: (
        {
            "scores": torch.randn(6, 5, dtype=torch.float64, generator=_generator()),
            "labels": torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0], [1, 1, 0, 0, 0]] * 2),
        },
        {"scores": "float", "labels": "labels"},
    ),
    ("views",): lambda: (
        {"views": torch.randn(3, 8, 4, dtype=torch.float64, generator=_generator())},
        {"views": "float"},
    ),
    ("vertices", "boxes", "crops", "step"): lambda: (
        {
            "vertices": _polygons(),
            "boxes": BOXES,
            "crops": box_crops(torch.rand(3, 32, 32, dtype=torch.float64, generator=_generator()), BOXES, size=8),
        },
        {"vertices": "float", "boxes": "float"},
    ),
    ("vertices", "boxes"): lambda: ({"vertices": _polygons(), "boxes": BOXES}, {"vertices": "float", "boxes": "float"}),
    ("masks", "images"): lambda: ({"masks": _masks(), "images": _images()}, {"masks": "float", "images": "float"}),
    ("masks", "images_lab", "box_masks"): lambda: (
        {"masks": _masks(), "images_lab": rgb_to_lab(_images()), "box_masks": _masks() > 0.3},
        {"masks": "float", "images_lab": "float", "box_masks": "labels"},
    ),
    ("scores", "relevance", "group_ids"): lambda: (
        {"scores": torch.randn(3, 5, dtype=torch.float64, generator=_generator()), "relevance": RELEVANCE},
        {"scores": "float", "relevance": "labels"},
    ),
    ("scores", "relevance"): lambda: (
        {"scores": torch.randn(3, 5, dtype=torch.float64, generator=_generator()), "relevance": RELEVANCE},
        {"scores": "float", "relevance": "labels"},
    ),
}

#: Losses whose inputs differ from the others of their signature: the changed arguments.
SPECIAL = {"JRCLoss": lambda: {"logits": torch.randn(12, 2, dtype=torch.float64, generator=_generator())}}

#: Valid values of the constructor arguments that have no default.
REQUIRED = {"num_classes": 4, "embedding_size": 8}

#: Constructor hyper-parameters that must be positive: 0 and a negative value must be refused, naming them.
POSITIVE = (
    "temperature",
    "tau",
    "tau1",
    "tau2",
    "sigma",
    "scale",
    "softmax_scale",
    "gamma",
    "epsilon",
    "relative_epsilon",
    "tol",
    "max_iter",
    "check_every",
    "memory_budget",
    "block_size",
    "chunk_size",
    "num_classes",
    "embedding_size",
    "top_n",
    "lam",
)


def _signature(cls: type[PairLoss]) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(cls.forward).parameters if name != "self")


def _build(cls: type[PairLoss], **overrides: Any) -> PairLoss:
    parameters = inspect.signature(cls.__init__).parameters
    required = {
        name: REQUIRED[name]
        for name, p in parameters.items()
        if name != "self" and p.default is inspect.Parameter.empty and name in REQUIRED
    }
    return cls(**{**required, **overrides}).double()


def _valid(name: str) -> tuple[PairLoss, dict[str, Any], dict[str, str]]:
    cls = LOSSES[name]
    inputs, roles = INPUTS[_signature(cls)]()
    inputs.update(SPECIAL[name]() if name in SPECIAL else {})
    return _build(cls), inputs, roles


def _finite_value_and_gradient(loss: PairLoss, inputs: dict[str, Any]) -> Tensor:
    inputs = {k: v.detach().clone().requires_grad_(True) if _differentiable(v) else v for k, v in inputs.items()}
    value = loss(**inputs)
    assert value.ndim == 0 and bool(torch.isfinite(value)), f"{type(loss).__name__} gave {value}"
    leaves = [v for v in inputs.values() if isinstance(v, Tensor) and v.requires_grad]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)
    return value


def _differentiable(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


# ---------------------------------------------------------------------------------------------- valid inputs


def test_every_loss_has_valid_inputs() -> None:
    missing = sorted({_signature(cls) for cls in LOSSES.values()} - set(INPUTS))
    assert not missing, f"describe valid inputs for these forward signatures in INPUTS: {missing}"


@pytest.mark.parametrize("name", LOSSES)
def test_valid_inputs_give_a_finite_value_and_gradient(name: str) -> None:
    loss, inputs, _ = _valid(name)
    _finite_value_and_gradient(loss, inputs)


# ---------------------------------------------------------------------------------------- broken arguments


@dataclass(frozen=True)
class Broken:
    """One way to break an argument: how, and what the error must say besides the argument's name."""

    label: str
    apply: Callable[[Tensor], Any]
    says: str = ""
    empty_ok: bool = False  # an empty input may also give a valid (finite) value


def _with_first(value: Tensor, fill: float) -> Tensor:
    broken = value.detach().clone()
    broken.view(-1)[0] = fill
    return broken


FLOAT_BREAKS = (
    Broken("nan", lambda v: _with_first(v, math.nan), "NaN|finite|nan"),
    Broken("inf", lambda v: _with_first(v, math.inf), "inf|finite"),
    Broken("extra dim", lambda v: v.unsqueeze(0)),
    Broken("missing dim", lambda v: v[0]),
    Broken("integer", lambda v: v.round().long(), "float|dtype"),
    Broken("list", lambda v: v.tolist(), "Tensor|tensor"),
    Broken("empty", lambda v: v[:0], empty_ok=True),
)
LABEL_BREAKS = (
    Broken("short", lambda v: v[:-1]),
    Broken("list", lambda v: v.tolist(), "Tensor|tensor"),
)
CLASS_ID_BREAKS = (*LABEL_BREAKS, Broken("float", lambda v: v.double() + 0.5, "integer|dtype"))

BREAKS = {"float": FLOAT_BREAKS, "labels": LABEL_BREAKS, "class_ids": CLASS_ID_BREAKS}

CASES = [
    pytest.param(name, argument, broken, id=f"{name}-{argument}-{broken.label}")
    for name, cls in LOSSES.items()
    for argument, role in INPUTS[_signature(cls)]()[1].items()
    for broken in BREAKS[role]
]


@pytest.mark.parametrize(("name", "argument", "broken"), CASES)
def test_a_broken_argument_is_named(name: str, argument: str, broken: Broken) -> None:
    loss, inputs, _ = _valid(name)
    inputs[argument] = broken.apply(inputs[argument])
    try:
        value = loss(**inputs)
    except ValueError as error:
        said = str(error)
        assert argument in said or (argument == "labels" and "label" in said), f"{name}: {said!r} names no {argument}"
        if broken.says:
            import re

            assert re.search(broken.says, said), f"{name}: {said!r} does not say {broken.says!r}"
        return
    assert broken.empty_ok, f"{name} accepted {argument} broken as {broken.label!r}: {value}"
    assert bool(torch.isfinite(value)), f"{name} gave {value} for an empty {argument}"


# ------------------------------------------------------------------------------------------ hyper-parameters

HYPER_CASES = [
    pytest.param(name, parameter, bad, id=f"{name}-{parameter}={bad}")
    for name, cls in LOSSES.items()
    for parameter in inspect.signature(cls.__init__).parameters
    if parameter in POSITIVE
    for bad in (0, -1)
]


@pytest.mark.parametrize(("name", "parameter", "bad"), HYPER_CASES)
def test_a_hyper_parameter_that_must_be_positive_is_checked(name: str, parameter: str, bad: int) -> None:
    with pytest.raises(ValueError, match=parameter):
        cls = LOSSES[name]
        _, inputs, _ = _valid(name)
        loss = _build(cls, **{parameter: bad})
        loss(**inputs)


# ---------------------------------------------------------------------------------------- dtypes and ranges

EMBEDDING_LOSSES = [name for name, cls in LOSSES.items() if _signature(cls)[:2] == ("embeddings", "labels")]


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
@pytest.mark.parametrize("name", EMBEDDING_LOSSES)
def test_any_integer_dtype_of_class_ids_gives_the_same_loss(name: str, dtype: torch.dtype) -> None:
    loss, inputs, _ = _valid(name)
    expected = loss(**inputs)
    inputs["labels"] = inputs["labels"].to(dtype)
    assert torch.equal(loss(**inputs), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", EMBEDDING_LOSSES)
def test_half_precision_embeddings_work(name: str, dtype: torch.dtype) -> None:
    loss, inputs, _ = _valid(name)
    expected = loss(**inputs)
    loss = loss.to(dtype)
    embeddings = inputs["embeddings"].to(dtype).requires_grad_(True)
    value = loss(embeddings, inputs["labels"])
    (grad,) = torch.autograd.grad(value, embeddings)
    assert value.dtype == dtype and bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all())
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=0.1, abs=0.05)


RANKING_LOSSES = [name for name, cls in LOSSES.items() if _signature(cls)[:2] == ("scores", "relevance")]


@pytest.mark.parametrize("name", RANKING_LOSSES)
def test_a_large_relevance_gives_a_finite_loss(name: str) -> None:
    loss, inputs, _ = _valid(name)
    relevance = inputs["relevance"].clone()
    relevance[relevance >= 0] += 200.0  # 2^200 overflows float32; the same order of relevance
    for dtype in (torch.float32, torch.float64):
        scores = inputs["scores"].to(dtype).requires_grad_(True)
        value = loss.to(dtype)(scores, relevance.to(dtype))
        (grad,) = torch.autograd.grad(value, scores)
        assert bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all()), (name, dtype, value)


# ---------------------------------------------------------------------------------- the cases of the issue


def test_pairwise_cross_entropy_of_all_zero_embeddings_is_log_c() -> None:
    import pairloss

    loss = pairloss.PairwiseCrossEntropyLoss(num_classes=4, embedding_size=8).double()
    zeros = torch.zeros(16, 8, dtype=torch.float64, requires_grad=True)
    value = loss(zeros, CLASS_IDS)
    (grad,) = torch.autograd.grad(value, zeros)
    # z = 0: no tightness, and the contrastive term is log Σ_k e^0 = log C whatever λ > 0
    assert float(value.detach()) == pytest.approx(math.log(4))
    assert bool(torch.isfinite(grad).all())


def test_box_crops_of_an_image_without_boxes_are_empty() -> None:
    from pairloss import BoxSnakeLoss

    crops = box_crops(torch.rand(3, 20, 20), torch.zeros(0, 4), size=8, padding=2)
    assert crops.lab.shape == (0, 3, 12, 12) and crops.affinity.shape == (0, 8, 12, 12)
    assert crops.box_masks.shape == (0, 12, 12)
    vertices = torch.zeros(0, 8, 2, requires_grad=True)
    value = BoxSnakeLoss()(vertices, torch.zeros(0, 4), crops)
    value.backward()
    assert float(value.detach()) == 0.0


def test_the_default_ot_epsilon_uses_the_population_std_as_ott_jax() -> None:
    from pairloss.losses.ot import multimarginal_sinkhorn

    cost = torch.rand(3, 4, 5, dtype=torch.float64, generator=_generator())
    result = multimarginal_sinkhorn(cost, tol=1e-6)
    population = float(((cost - cost.mean()) ** 2).mean().sqrt())  # (1/N Σ (C − mean)²)^½, OTT's std_cost_matrix
    assert result.epsilon == pytest.approx(0.05 * population, rel=1e-12)


def test_a_saturated_rs_at_k_warns() -> None:
    import pairloss

    # similarities all within 0.95–1 and 400 references: every positive's smooth rank is ~200, far above k = 16
    generator = _generator()
    base = torch.randn(1, 32, dtype=torch.float64, generator=generator)
    embeddings = base + 0.05 * torch.randn(400, 32, dtype=torch.float64, generator=generator)
    labels = torch.arange(100).repeat_interleave(4)
    with pytest.warns(RuntimeWarning, match="RS@k is saturated"):
        value = pairloss.RecallAtKSurrogateLoss()(embeddings, labels)
    assert float(value) == pytest.approx(1.0, abs=1e-6)


def test_a_trained_rs_at_k_does_not_warn() -> None:
    import warnings

    import pairloss

    embeddings, labels = _embedding_inputs()["embeddings"], CLASS_IDS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(pairloss.RecallAtKSurrogateLoss()(embeddings, labels)) < 1


def test_a_large_batch_step_without_gradient_warns() -> None:
    import pairloss
    from pairloss.training.large_batch import large_batch_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32))
    with torch.no_grad():  # an "untrained" network whose outputs all lie close together (cosines 0.95–1)
        model[2].bias.add_(10.0)
        model[2].weight.mul_(0.01)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, labels = torch.randn(400, 16), torch.arange(100).repeat_interleave(4)
    with pytest.warns(RuntimeWarning) as caught:
        step = large_batch_step(model, optimizer, inputs, labels, pairloss.RecallAtKSurrogateLoss(), chunk_size=128)
    said = [str(w.message) for w in caught]
    assert any("RS@k is saturated" in s for s in said) and any("leaves the model as it is" in s for s in said)
    assert step.loss == 1.0  # float32: σ((k − rank)/τ1) underflows to exactly 0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
