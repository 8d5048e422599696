"""Multi-label ranking losses, metrics, loaders and the ``multilabel`` recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import coverage_error, label_ranking_average_precision_score, label_ranking_loss

from pairloss.data.multilabel import (
    LinearMultiLabelProblem,
    load_arff,
    load_svmlight_multilabel,
    make_multilabel,
    mulan_label_names,
)
from pairloss.functional import multilabel_pairwise_loss, multilabel_univariate_loss
from pairloss.losses import MultiLabelPairwiseLoss, MultiLabelUnivariateLoss, registered_losses
from pairloss.metrics import (
    coverage,
    hamming_loss,
    label_ranking_average_precision,
    macro_f1,
    micro_f1,
    multilabel_report,
    one_error,
    ranking_loss,
)
from pairloss.recipes import run_experiment

LINKS = {
    "logistic": lambda z: math.log1p(math.exp(-z)),
    "hinge": lambda z: max(0.0, 1 - z),
    "exponential": lambda z: math.exp(-z),
}


def _inputs(batch: int = 7, c: int = 9, density: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, c, generator=g, dtype=torch.float64)
    labels = (torch.rand(batch, c, generator=g) < density).long()
    labels[0] = 0  # no relevant label
    labels[1] = 1  # no irrelevant label
    labels[2, :2] = torch.tensor([1, 0])
    return scores, labels


def _pairwise_reference(scores: torch.Tensor, labels: torch.Tensor, link: str) -> float:
    total = 0.0
    for f, y in zip(scores.tolist(), labels.tolist()):
        pos = [j for j, v in enumerate(y) if v == 1]
        neg = [j for j, v in enumerate(y) if v == 0]
        if pos and neg:
            total += sum(LINKS[link](f[p] - f[q]) for p in pos for q in neg) / (len(pos) * len(neg))
    return total / len(scores)


def _univariate_reference(scores: torch.Tensor, labels: torch.Tensor, weighting: str, link: str) -> float:
    total = 0.0
    for f, y in zip(scores.tolist(), labels.tolist()):
        c = len(y)
        n_pos = sum(y)
        n_neg = c - n_pos
        if (n_pos == 0 or n_neg == 0) and weighting != "u1":
            continue  # no label pair: only the plain univariate loss u1 counts such a row
        for fj, yj in zip(f, y):
            sign = 1 if yj == 1 else -1
            if weighting == "u1":
                weight = 1 / c
            elif weighting == "u2":
                weight = 1 / (n_pos * n_neg)
            elif weighting == "u3":
                weight = 1 / n_pos if yj == 1 else 1 / n_neg
            else:
                weight = 1 / min(n_pos, n_neg)
            total += weight * LINKS[link](sign * fj)
    return total / len(scores)


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("density", [0.25, 0.8])
def test_pairwise_equals_loop_reference(link: str, density: float) -> None:
    scores, labels = _inputs(density=density)
    expected = _pairwise_reference(scores, labels, link)
    for chunk in (None, 1, 2):
        got = multilabel_pairwise_loss(scores, labels, link=link, chunk_size=chunk)
        assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("weighting", ["u1", "u2", "u3", "u4"])
def test_univariate_equals_loop_reference(weighting: str, link: str) -> None:
    scores, labels = _inputs()
    got = multilabel_univariate_loss(scores, labels, weighting=weighting, link=link)
    assert got.item() == pytest.approx(_univariate_reference(scores, labels, weighting, link), rel=1e-10)


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("density", [0.25, 0.8])
def test_pairwise_gradcheck(link: str, density: float) -> None:
    scores, labels = _inputs(5, 6, density)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: multilabel_pairwise_loss(s, labels, link=link, chunk_size=2), (scores,))


@pytest.mark.parametrize("weighting", ["u1", "u2", "u3", "u4"])
def test_univariate_gradcheck(weighting: str) -> None:
    scores, labels = _inputs(5, 6)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: multilabel_univariate_loss(s, labels, weighting=weighting), (scores,))


def test_pairwise_gradient_matches_autograd_on_dense_form() -> None:
    scores, labels = _inputs(6, 8, 0.4, seed=3)
    leaf = scores.clone().requires_grad_(True)
    multilabel_pairwise_loss(leaf, labels, chunk_size=3).backward()
    dense = scores.clone().requires_grad_(True)
    y = labels.double()
    pair = y[:, :, None] * (1 - y)[:, None, :]
    count = pair.sum((1, 2))
    per_row = (pair * torch.nn.functional.softplus(-(dense[:, :, None] - dense[:, None, :]))).sum((1, 2))
    (torch.where(count > 0, per_row / count.clamp_min(1), 0 * per_row).mean()).backward()
    assert leaf.grad is not None and dense.grad is not None
    torch.testing.assert_close(leaf.grad, dense.grad)


@pytest.mark.parametrize("labels_value", [0, 1])
def test_degenerate_rows_give_zero_loss_and_gradient(labels_value: int) -> None:
    scores = torch.randn(4, 5, requires_grad=True)
    labels = torch.full((4, 5), labels_value)
    losses = [multilabel_pairwise_loss(scores, labels)] + [
        multilabel_univariate_loss(scores, labels, weighting=w) for w in ("u2", "u3", "u4")
    ]
    for loss in losses:
        (grad,) = torch.autograd.grad(loss, scores)
        assert loss.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("labels_value", [0, 1])
def test_plain_univariate_loss_keeps_rows_without_a_label_pair(labels_value: int) -> None:
    """u1 is defined on every row (the authors' cost matrix is 1/c everywhere), the others skip such rows."""
    scores = torch.randn(4, 5, dtype=torch.float64)
    labels = torch.full((4, 5), labels_value)
    sign = 2.0 * labels_value - 1.0
    expected = torch.nn.functional.softplus(-sign * scores).mean()
    assert multilabel_univariate_loss(scores, labels, weighting="u1").item() == pytest.approx(expected.item())


def test_single_label_and_empty_batch() -> None:
    one = torch.randn(3, 1, requires_grad=True)
    assert multilabel_pairwise_loss(one, torch.ones(3, 1)).item() == 0.0
    assert multilabel_univariate_loss(one, torch.zeros(3, 1)).item() == 0.0
    empty = torch.zeros(0, 4)
    assert multilabel_pairwise_loss(empty, empty).item() == 0.0
    assert multilabel_univariate_loss(empty, empty).item() == 0.0


def test_large_label_count_chunks_agree() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 2000, generator=g, dtype=torch.float64)
    labels = (torch.rand(3, 2000, generator=g) < 0.01).long()
    full = multilabel_pairwise_loss(scores, labels)
    chunked = multilabel_pairwise_loss(scores, labels, chunk_size=4)
    assert full.item() == pytest.approx(chunked.item(), rel=1e-12)
    assert full.item() == pytest.approx(_pairwise_reference(scores, labels, "logistic"), rel=1e-9)


def test_float_and_bool_labels_agree() -> None:
    scores, labels = _inputs()
    base = multilabel_pairwise_loss(scores, labels)
    assert multilabel_pairwise_loss(scores, labels.bool()).item() == pytest.approx(base.item())
    assert multilabel_pairwise_loss(scores, labels.float()).item() == pytest.approx(base.item())


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        (torch.tensor([[float("nan"), 1.0]]), torch.tensor([[1, 0]]), "NaN or infinite"),
        (torch.tensor([[float("inf"), 1.0]]), torch.tensor([[1, 0]]), "NaN or infinite"),
        (torch.tensor([1.0, 2.0]), torch.tensor([1, 0]), "2 dimensions"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 0]]), "floating-point"),
        (torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 0, 1]]), "shape of scores"),
        (torch.tensor([[1.0, 2.0]]), torch.tensor([[2, 0]]), "only 0 and 1"),
    ],
)
def test_invalid_inputs_raise(scores: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        multilabel_pairwise_loss(scores, labels)
    with pytest.raises(ValueError, match=match):
        multilabel_univariate_loss(scores, labels)


def test_invalid_options_raise() -> None:
    scores, labels = _inputs()
    with pytest.raises(ValueError, match="weighting"):
        multilabel_univariate_loss(scores, labels, weighting="u5")
    with pytest.raises(ValueError, match="link"):
        MultiLabelPairwiseLoss(link="square")
    with pytest.raises(ValueError, match="chunk_size"):
        multilabel_pairwise_loss(scores, labels, chunk_size=0)


def test_modules_match_functions_and_are_registered() -> None:
    scores, labels = _inputs()
    assert MultiLabelPairwiseLoss("hinge")(scores, labels).item() == pytest.approx(
        multilabel_pairwise_loss(scores, labels, link="hinge").item()
    )
    assert MultiLabelUnivariateLoss("u2")(scores, labels).item() == pytest.approx(
        multilabel_univariate_loss(scores, labels, weighting="u2").item()
    )
    registry = registered_losses()
    for cls in (MultiLabelPairwiseLoss, MultiLabelUnivariateLoss):
        assert registry[cls.__name__] is cls and cls.family == "multilabel" and cls.paper


# ----------------------------------------------------------------------------------------------- metrics


def _metric_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (60, 6)).astype(float)  # many ties
    labels = (rng.random((60, 6)) < 0.35).astype(int)
    labels[0] = 0
    labels[1] = 1
    return scores, labels


def test_ranking_loss_equals_sklearn_convention() -> None:
    for seed in range(3):
        scores, labels = _metric_inputs(seed)
        assert ranking_loss(scores, labels) == pytest.approx(label_ranking_loss(labels, scores), rel=1e-12)


def test_ranking_loss_hand_worked_conventions() -> None:
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [1.0, 2.0, 3.0]])
    labels = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1]])
    # row 0: (p0 > q1) right, (p2 < q1) wrong → 1/2; row 1: (p0 = q1) tie = wrong, (p0 > q2) right → 1/2;
    # row 2 has no irrelevant label: sklearn scores it 0 and keeps it, the paper drops it.
    assert ranking_loss(scores, labels) == pytest.approx(1 / 3)
    assert ranking_loss(scores, labels, convention="paper") == pytest.approx(1 / 2)
    with pytest.warns(RuntimeWarning, match="no row has both"):
        assert math.isnan(ranking_loss(scores[2:], labels[2:], convention="paper"))
    with pytest.raises(ValueError, match="convention"):
        ranking_loss(scores, labels, convention="mulan")


def test_coverage_and_average_precision_match_sklearn_on_rows_with_pairs() -> None:
    scores, labels = _metric_inputs(1)
    keep = labels.any(1) & ~labels.all(1)
    assert coverage(scores[keep], labels[keep]) == pytest.approx(coverage_error(labels[keep], scores[keep]) - 1)
    assert label_ranking_average_precision(scores[keep], labels[keep]) == pytest.approx(
        label_ranking_average_precision_score(labels[keep], scores[keep])
    )
    # a row without a relevant label is skipped, not scored
    assert coverage(scores, labels) == pytest.approx(coverage(scores[labels.any(1)], labels[labels.any(1)]))


def test_one_error_and_classification_measures_by_hand() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.1], [0.0, 0.3, 0.6], [0.1, 0.2, 0.3]])
    labels = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0]])
    # top labels: 0 (relevant), {0, 1} tied (1 irrelevant → error), 2 (relevant); row 3 has no relevant label.
    assert one_error(scores, labels) == pytest.approx(1 / 3)
    predictions = (scores > 0.25).astype(int)  # [[1,0,1],[0,0,0],[0,1,1],[0,0,1]]
    assert hamming_loss(predictions, labels) == pytest.approx(5 / 12)
    # micro: TP = 2, FP = 3, FN = 2 → 4 / 9
    assert micro_f1(predictions, labels) == pytest.approx(4 / 9)
    # per label F1: label0 TP1 FN1 → 2/3; label1 FP1 → 0; label2 TP1 FP2 FN1 → 2/5
    assert macro_f1(predictions, labels) == pytest.approx((2 / 3 + 0 + 2 / 5) / 3)
    report = multilabel_report(scores, labels, threshold=0.25)
    assert all(math.isfinite(v) for v in report.values())


def test_metrics_accept_tensors_and_validate() -> None:
    scores, labels = _metric_inputs()
    assert ranking_loss(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        ranking_loss(scores, labels)
    )
    with pytest.raises(ValueError, match="same shape"):
        ranking_loss(scores, labels[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        coverage(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        one_error(scores, labels * 2)
    with pytest.raises(ValueError, match="threshold"):
        micro_f1(scores, labels)


# ----------------------------------------------------------------------------------------------- loaders


def test_arff_dense_mulan_layout_with_xml(tmp_path: Path) -> None:
    arff = tmp_path / "toy.arff"
    arff.write_text(
        "% a comment\n@relation toy\n@attribute 'feat a' numeric\n@attribute f2 {x,y,z}\n"
        "@attribute lab1 {0,1}\n@attribute lab2 {0,1}\n@data\n0.5,y,1,0\n-1,z,0,1\n2,x,1,1\n"
    )
    xml = tmp_path / "toy.xml"
    xml.write_text(
        '<labels xmlns="http://mulan.sourceforge.net/labels"><label name="lab1"></label>'
        '<label name="lab2"></label></labels>'
    )
    names = mulan_label_names(xml)
    assert names == ["lab1", "lab2"]
    for data in (load_arff(arff, label_names=names), load_arff(arff, n_labels=2)):
        np.testing.assert_array_equal(data.labels, [[1, 0], [0, 1], [1, 1]])
        np.testing.assert_allclose(data.features, [[0.5, 1], [-1, 2], [2, 0]])
        assert data.feature_names == ["feat a", "f2"]


def test_arff_sparse_meka_layout(tmp_path: Path) -> None:
    arff = tmp_path / "meka.arff"
    arff.write_text(
        "@relation 'Toy: -C 3'\n@attribute A {0,1}\n@attribute B {0,1}\n@attribute C {0,1}\n"
        "@attribute x1 numeric\n@attribute x2 numeric\n@data\n{0 1,3 2.5}\n{1 1,2 1,4 -1}\n{}\n"
    )
    data = load_arff(arff)
    assert data.label_names == ["A", "B", "C"]
    np.testing.assert_array_equal(data.labels, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(data.features, [[2.5, 0], [0, -1], [0, 0]])


@pytest.mark.parametrize(
    ("body", "kwargs", "match"),
    [
        ("@relation r\n@attribute a numeric\n@attribute l {0,1}\n@data\n1,1\n", {}, "n_labels"),
        ("@relation r\n@attribute a numeric\n@attribute l {0,1}\n@data\n?,1\n", {"n_labels": 1}, "missing"),
        ("@relation r\n@attribute a numeric\n@attribute l numeric\n@data\n1,3\n", {"n_labels": 1}, "only 0 and 1"),
        ("@relation r\n@attribute a numeric\n@attribute l {0,1}\n@data\n1\n", {"n_labels": 1}, "values"),
    ],
)
def test_arff_errors(tmp_path: Path, body: str, kwargs: dict[str, int], match: str) -> None:
    path = tmp_path / "bad.arff"
    path.write_text(body)
    with pytest.raises(ValueError, match=match):
        load_arff(path, **kwargs)  # type: ignore[arg-type]


def test_svmlight_multilabel(tmp_path: Path) -> None:
    path = tmp_path / "toy.svm"
    path.write_text("0,2 1:0.5 3:2\n 2:1.5\n1 1:1\n")
    data = load_svmlight_multilabel(path, n_labels=4)
    np.testing.assert_array_equal(data.labels, [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_allclose(data.features.toarray(), [[0.5, 0, 2], [0, 1.5, 0], [1, 0, 0]])
    found = load_svmlight_multilabel(path)
    assert found.label_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="outside"):
        load_svmlight_multilabel(path, n_labels=2)


def test_make_multilabel_structure() -> None:
    data = make_multilabel(3000, 40, n_features=8, avg_labels=2.0, seed=3)
    assert data.labels.shape == (3000, 40) and data.features.shape == (3000, 8)
    assert data.labels.sum(1).min() >= 1
    assert 1.5 < data.labels.sum(1).mean() < 3.0
    assert data.true_scores is not None
    # the generating scores rank far better than chance
    assert ranking_loss(data.true_scores, data.labels) < 0.2
    again = make_multilabel(3000, 40, n_features=8, avg_labels=2.0, seed=3)
    np.testing.assert_array_equal(again.labels, data.labels)
    with pytest.raises(ValueError, match="avg_labels"):
        make_multilabel(10, 3, avg_labels=5)


# ----------------------------------------------------------------------------------------------- recipe


TINY = {"n_fit": 40, "n_validation": 40, "n_test": 60, "max_iter": 5, "trials": 1, "timing_repeats": 1,
        "timing_batch": 8}  # fmt: skip


def test_multilabel_recipe_quick_run(tmp_path: Path) -> None:
    from pairloss.recipes.multilabel import GROWTH_C, RECIPE, settings_of

    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    payload = json.loads(result.results_path.read_text())
    assert payload["mode"] == "quick" and set(payload["tuning"]) == {m.name for m in RECIPE.methods}
    by_c, _, every = settings_of(RECIPE.config)
    for runs in payload["per_seed"].values():
        for method, run in runs.items():
            metrics = run["metrics"]
            assert all(math.isfinite(v) for v in metrics.values()), method
            for setting in every:
                gap = metrics[f"RL {setting.name}"] - metrics[f"train RL {setting.name}"]
                assert metrics[f"gap {setting.name}"] == pytest.approx(gap)
            top, low = by_c[-1].name, by_c[0].name
            assert metrics[GROWTH_C] == pytest.approx(metrics[f"gap {top}"] - metrics[f"gap {low}"])
    # Seeds draw different training sets (the gap's randomness), the test set is shared.
    first, second = (payload["per_seed"][s]["u1 (plain)"]["metrics"] for s in ("0", "1"))
    assert first[f"train RL {by_c[0].name}"] != second[f"train RL {by_c[0].name}"]
    assert {v["verdict"] for v in payload["verdicts"]} <= {"held", "not held", "inconclusive"}
    with pytest.raises(ValueError, match="fixed by the recipe"):
        run_experiment(RECIPE, out=tmp_path / "other", seeds=1, quick=True, overrides={**TINY, "labels": [4, 8]})


@pytest.mark.parametrize("loss", ["pairwise", "u1", "u3"])
def test_fit_linear_reaches_the_regularised_optimum(loss: str) -> None:
    from pairloss.recipes.multilabel import _loss, fit_linear

    sample = LinearMultiLabelProblem.create(6, n_features=5, prevalence=0.3, seed=2).sample(200, seed=0)
    x = torch.from_numpy(sample.features).double()
    y = torch.from_numpy(sample.labels).double()
    model = fit_linear(loss, x, y, weight_decay=1e-2, max_iter=200)
    objective = _loss(loss, model(x), y) + 0.5e-2 * model.weight.square().sum()
    grads = torch.autograd.grad(objective, list(model.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-5


def test_linear_problem_prevalence_does_not_depend_on_c() -> None:
    for c in (10, 200):
        problem = LinearMultiLabelProblem.create(c, n_features=8, prevalence=0.1, seed=c)
        sample = problem.sample(4000, seed=1)
        assert sample.labels.shape == (4000, c) and sample.features.shape == (4000, 8)
        assert float(sample.labels.mean()) == pytest.approx(0.1, abs=0.01)
        assert sample.true_scores is not None
        again = problem.sample(4000, seed=1)
        assert np.array_equal(again.labels, sample.labels)
        other = problem.sample(4000, seed=2)
        assert not np.array_equal(other.labels, sample.labels)
    # Noise-free labels are the sign of the ideal scores.
    exact = LinearMultiLabelProblem.create(5, prevalence=0.3, noise=0.0).sample(500, seed=0)
    assert exact.true_scores is not None
    assert np.array_equal(exact.labels, (exact.true_scores > 0).astype(np.uint8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"prevalence": 1.0}, "prevalence"), ({"n_features": 0}, "n_features"), ({"noise": -1.0}, "noise")],
)
def test_linear_problem_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinearMultiLabelProblem.create(5, **kwargs)
    with pytest.raises(ValueError, match="n_samples"):
        LinearMultiLabelProblem.create(5).sample(0, seed=0)
