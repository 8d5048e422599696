"""Deep-hashing losses, Hamming-ranking metrics, the attention hashing network, texture patches and the recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pairloss.data.images import TEXTURE_SOURCES, texture_crops, texture_patches
from pairloss.data.salient import SALIENT_CHARACTERS, salient_glyphs
from pairloss.functional import ash_loss, dpsh_loss, dsh_loss, hashnet_loss
from pairloss.losses import ASHLoss, DPSHLoss, DSHLoss, HashNetLoss, registered_losses
from pairloss.losses.hashing import HashCodeMemory, quantization_penalty
from pairloss.metrics import (
    hamming_map,
    hamming_ranking,
    pack_codes,
    precision_recall_curve,
    precision_within_radius,
)
from pairloss.models.hashing import AttentionHashingNet, HashHead, HashingCNN, SalientFeatures, SpatialAttention
from pairloss.recipes.protocol import run_experiment

FUNCTIONS = {"dpsh": dpsh_loss, "hashnet": hashnet_loss, "dsh": dsh_loss, "ash": ash_loss}


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _similar(a: object, b: object) -> bool:
    if isinstance(a, list):
        return any(x and y for x, y in zip(a, b))  # type: ignore[arg-type]
    return a == b


def _reference(name: str, u: torch.Tensor, labels: torch.Tensor, ref=None, ref_labels=None, **kw) -> float:  # type: ignore[no-untyped-def]
    """The loss from its formula, with explicit loops over ordered pairs."""
    codes, lab = u.tolist(), labels.tolist()
    r_codes, r_lab = (codes, lab) if ref is None else (ref.tolist(), ref_labels.tolist())
    k = u.shape[1]
    pos, neg = [], []
    for i, ui in enumerate(codes):
        for j, uj in enumerate(r_codes):
            if ref is None and i == j:
                continue
            dot = sum(a * b for a, b in zip(ui, uj))
            s = _similar(lab[i], r_lab[j])
            if name == "dpsh":
                theta = 0.5 * dot
                loss = _softplus(theta) - (theta if s else 0.0)
            elif name == "hashnet":
                theta = kw.get("alpha", 10.0 / k) * dot
                loss = _softplus(theta) - (theta if s else 0.0)
            elif name == "dsh":
                d = sum((a - b) ** 2 for a, b in zip(ui, uj))
                loss = 0.5 * d if s else 0.5 * max(2.0 * k - d, 0.0)
            else:
                dist = 0.5 * (k - dot)
                loss = 0.5 * dist if s else 0.5 * max(kw.get("margin", k / 2) - dist, 0.0)
            (pos if s else neg).append(loss)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    flat = [abs(abs(x) - 1) for row in codes for x in row]
    if name == "hashnet":
        return 0.5 * (mean(pos) + mean(neg))
    pairs = mean(pos + neg)
    if name == "dsh":
        return pairs + kw.get("regularization", 0.01) * k * mean(flat)
    weight = kw.get("quantization_weight", 0.1)
    return pairs + weight * mean([x * x for x in flat])


def _codes(n: int = 9, k: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(2 * torch.randn(n, k, generator=g, dtype=torch.float64))


def _multi_hot(n: int, c: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, c, generator=g) < 0.3).long()
    labels[0] = 0
    return labels


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("multi_label", [False, True])
def test_losses_equal_loop_reference(name: str, multi_label: bool) -> None:
    u = _codes()
    labels = _multi_hot(9) if multi_label else torch.tensor([0, 1, 0, 2, 1, 0, 3, 3, 2])
    expected = _reference(name, u, labels)
    for block in (None, 1, 4):
        assert FUNCTIONS[name](u, labels, block_size=block).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_losses_with_reference_set(name: str) -> None:
    u, ref = _codes(5, seed=1), _codes(7, seed=2)
    labels, ref_labels = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 1, 0, 2, 2, 3, 0])
    got = FUNCTIONS[name](u, labels, ref_emb=ref, ref_labels=ref_labels, block_size=2)
    assert got.item() == pytest.approx(_reference(name, u, labels, ref, ref_labels), rel=1e-10)


def test_hyper_parameters_follow_the_formula() -> None:
    u, labels = _codes(), torch.tensor([0, 1, 0, 2, 1, 0, 3, 3, 2])
    assert ash_loss(u, labels, margin=5.0, quantization_weight=0.3).item() == pytest.approx(
        _reference("ash", u, labels, margin=5.0, quantization_weight=0.3)
    )
    assert hashnet_loss(u, labels, alpha=0.7).item() == pytest.approx(_reference("hashnet", u, labels, alpha=0.7))
    assert dsh_loss(u, labels, regularization=0.5).item() == pytest.approx(
        _reference("dsh", u, labels, regularization=0.5)
    )


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradcheck(name: str) -> None:
    u = _codes(6, 4, seed=3).requires_grad_(True)
    labels = _multi_hot(6, seed=4)
    assert torch.autograd.gradcheck(lambda x: FUNCTIONS[name](x, labels, block_size=2), (u,))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_degenerate_batches(name: str) -> None:
    kwargs = {"regularization": 0.0} if name == "dsh" else {} if name == "hashnet" else {"quantization_weight": 0.0}
    single = _codes(1, 4).requires_grad_(True)
    loss = FUNCTIONS[name](single, torch.tensor([3]), **kwargs)
    (grad,) = torch.autograd.grad(loss, single)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    distinct = _codes(5, 4).requires_grad_(True)
    for labels in (torch.arange(5), torch.zeros(5, dtype=torch.long), torch.zeros(5, 3, dtype=torch.long)):
        loss = FUNCTIONS[name](distinct, labels, **kwargs)
        (grad,) = torch.autograd.grad(loss, distinct)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert loss.item() == pytest.approx(_reference(name, distinct.detach(), labels, **kwargs))


def test_quantization_penalty_pushes_magnitude_not_sign() -> None:
    assert quantization_penalty(torch.tensor([[1.0, -1.0]])).item() == 0.0
    assert quantization_penalty(torch.tensor([[0.5, -0.5]])).item() == pytest.approx(0.25)
    assert quantization_penalty(torch.tensor([[0.5, -0.5]]), power=1).item() == pytest.approx(0.5)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize(
    ("codes", "labels", "match"),
    [
        (torch.tensor([[float("nan"), 0.1]]), torch.tensor([0]), "NaN or infinite"),
        (torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), "2 dimensions"),
        (torch.tensor([[1, 0]]), torch.tensor([0]), "floating-point"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([0, 1]), "entries"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([0.5]), "integer"),
    ],
)
def test_invalid_inputs_raise(name: str, codes: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FUNCTIONS[name](codes, labels)


def test_invalid_hyper_parameters_raise() -> None:
    u, labels = _codes(4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="reachable"):
        ash_loss(u, labels, margin=4.5)
    with pytest.raises(ValueError, match="alpha"):
        hashnet_loss(u, labels, alpha=-1.0)
    with pytest.raises(ValueError, match="margin"):
        dsh_loss(u, labels, margin=0.0)
    with pytest.raises(ValueError, match="quantization_weight"):
        dpsh_loss(u, labels, quantization_weight=-0.1)


def test_modules_match_functions_and_are_registered() -> None:
    u, labels = _codes(), torch.tensor([0, 1, 0, 2, 1, 0, 3, 3, 2])
    pairs = [
        (ASHLoss(margin=2.0), ash_loss(u, labels, margin=2.0)),
        (DPSHLoss(), dpsh_loss(u, labels)),
        (HashNetLoss(alpha=0.5), hashnet_loss(u, labels, alpha=0.5)),
        (DSHLoss(), dsh_loss(u, labels)),
    ]
    registry = registered_losses()
    for module, expected in pairs:
        assert module(u, labels).item() == pytest.approx(expected.item())
        assert registry[type(module).__name__] is type(module) and type(module).family == "hashing"


# ----------------------------------------------------------------------------------------------- metrics


def _bits(codes: np.ndarray) -> np.ndarray:
    return (codes >= 0).astype(int)


def _brute_force_ranking(q: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = np.array([[int(np.sum(_bits(a) != _bits(b))) for b in db] for a in q])
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), order


def _brute_force_map(q, ql, db, dbl, top_k=None) -> float:  # type: ignore[no-untyped-def]
    _, order = _brute_force_ranking(q, db)
    aps = []
    for i in range(len(q)):
        ranked = order[i] if top_k is None else order[i][:top_k]
        hits, precisions = 0, []
        for position, j in enumerate(ranked, start=1):
            relevant = bool(np.any(ql[i] & dbl[j])) if ql.ndim == 2 else ql[i] == dbl[j]
            if relevant:
                hits += 1
                precisions.append(hits / position)
        aps.append(sum(precisions) / hits if hits else 0.0)
    return float(np.mean(aps))


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("multi_label", [False, True])
def test_hamming_map_equals_brute_force(bits: int, multi_label: bool) -> None:
    rng = np.random.default_rng(bits)
    q, db = rng.standard_normal((15, bits)), rng.standard_normal((60, bits))
    if multi_label:
        ql, dbl = (rng.random((15, 4)) < 0.3).astype(int), (rng.random((60, 4)) < 0.3).astype(int)
    else:
        ql, dbl = rng.integers(0, 4, 15), rng.integers(0, 4, 60)
    ranking = hamming_ranking(q, ql, db, dbl)
    dist, order = _brute_force_ranking(q, db)
    np.testing.assert_array_equal(ranking.distances, dist)
    np.testing.assert_array_equal(ranking.indices, order)
    assert hamming_map(ranking) == pytest.approx(_brute_force_map(q, ql, db, dbl))
    assert hamming_map(ranking, 10) == pytest.approx(_brute_force_map(q, ql, db, dbl, 10))


def test_precision_within_radius_and_empty_ball() -> None:
    db = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, -1, -1], [-1] * 8], dtype=float)
    q = np.array([[1.0] * 8, [-1, -1, -1, -1, 1, 1, 1, 1]])
    ranking = hamming_ranking(q, np.array([0, 0]), db, np.array([0, 1, 0]))
    # query 0: items 0 (d=0, relevant) and 1 (d=2, not) → 1/2; query 1: every item at distance 4 → empty → 0.
    assert precision_within_radius(ranking, 2) == pytest.approx(0.25)
    precision, recall = precision_recall_curve(ranking)
    assert precision.shape == (9,) and recall[-1] == pytest.approx(1.0)
    assert precision[0] == pytest.approx(1.0)  # only query 0 has a non-empty ball at radius 0
    assert recall[0] == pytest.approx(0.25)  # query 0 finds 1 of its 2 relevant items, query 1 none


def test_pack_codes_and_validation() -> None:
    packed = pack_codes(np.array([[0.5, -0.2, 0.0, -1, 1, 1, -1, -1, 0.3]]))
    np.testing.assert_array_equal(packed, [[0b10101100, 0b10000000]])
    assert pack_codes(torch.tensor([[1.0] * 8])).shape == (1, 1)
    with pytest.raises(ValueError, match="NaN"):
        pack_codes(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.zeros(4))
    with pytest.raises(ValueError, match="same number of bits"):
        hamming_ranking(np.ones((1, 8)), [0], np.ones((2, 16)), [0, 1])
    with pytest.raises(ValueError, match="both"):
        hamming_ranking(np.ones((1, 8)), [0], np.ones((2, 8)), np.ones((2, 3)))


# ----------------------------------------------------------------------------------------------- model, data


def test_spatial_attention_formula() -> None:
    module = SpatialAttention()
    x = torch.randn(2, 3, 5, 5)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    expected = x * torch.sigmoid(torch.nn.functional.conv2d(pooled, module.conv.weight, module.conv.bias, padding=1))
    torch.testing.assert_close(module(x), expected)
    assert ((module.attention_map(x) > 0) & (module.attention_map(x) < 1)).all()
    with pytest.raises(ValueError, match="kernel_size"):
        SpatialAttention(2)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        module(torch.randn(3, 5, 5))


@pytest.mark.parametrize("attention", [True, False])
def test_hashing_cnn_shapes(attention: bool) -> None:
    model = HashingCNN(12, image_size=16, attention=attention)
    codes = model(torch.rand(4, 1, 16, 16))
    assert codes.shape == (4, 12) and (codes.abs() < 1).all()
    assert any(isinstance(m, SpatialAttention) for m in model.modules()) == attention
    with pytest.raises(ValueError, match="n_bits"):
        HashHead(4, 0)


def test_texture_patches() -> None:
    single = texture_patches(3, patch=8, seed=1)
    assert single.images.shape == (30, 1, 8, 8) and single.labels.tolist() == sorted(list(range(10)) * 3)
    assert 0 <= float(single.images.min()) and float(single.images.max()) <= 1
    multi = texture_patches(4, patch=8, multi_label=True, seed=1)
    assert multi.labels.shape == (40, len(TEXTURE_SOURCES))
    assert set(multi.labels.sum(1).tolist()) <= {1, 2}
    torch.testing.assert_close(texture_patches(4, patch=8, multi_label=True, seed=1).images, multi.images)
    with pytest.raises(ValueError, match="patch"):
        texture_patches(2, patch=7)


def test_texture_crops() -> None:
    images, sources = texture_crops(12, 10, seed=3)
    assert images.shape == (12, 1, 10, 10) and sources.shape == (12,)
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and int(sources.max()) < len(TEXTURE_SOURCES)
    again, _ = texture_crops(12, 10, seed=3)
    assert torch.equal(images, again) and not torch.equal(images, texture_crops(12, 10, seed=4)[0])
    with pytest.raises(ValueError, match="size"):
        texture_crops(2, 300)


def test_salient_glyphs_paint_only_the_boxes() -> None:
    chars = SALIENT_CHARACTERS[:3]
    data = salient_glyphs(4, chars, size=20, glyph_size=8, background_contrast=0.5, noise=0.0, seed=5)
    assert data.images.shape == (12, 1, 20, 20) and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.characters == chars and (data.boxes[:, 2:] == 8).all()
    assert (data.boxes[:, :2] >= 0).all() and (data.boxes[:, :2] <= 12).all()
    background = 0.5 + 0.5 * (texture_crops(12, 20, seed=6)[0] - 0.5)  # the backgrounds of seed 5
    inside = data.glyph_mask()
    assert inside.sum((1, 2, 3)).tolist() == [64] * 12
    torch.testing.assert_close(data.images[~inside], background[~inside])  # nothing painted outside the box
    ink = ((data.images - background).abs() * inside).amax((1, 2, 3))
    assert ink.min() > 0.05 and ink.mean() > 0.2  # ink in every box (thin strokes are faint at 8 pixels)
    again = salient_glyphs(4, chars, size=20, glyph_size=8, background_contrast=0.5, noise=0.0, seed=5)
    assert torch.equal(again.images, data.images) and torch.equal(again.boxes, data.boxes)
    distracted = salient_glyphs(2, chars, size=24, glyph_size=8, distractors=2, seed=1)
    assert distracted.images.shape == (6, 1, 24, 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_per_class": 0}, "n_per_class"),
        ({"characters": ("A",)}, "characters"),
        ({"glyph_size": 40}, "glyph_size"),
        ({"contrast": (0.8, 0.2)}, "contrast"),
        ({"background_contrast": 2.0}, "background_contrast"),
        ({"distractors": 1, "distractor_characters": ("A",)}, "distractor_characters"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_salient_glyphs_reject_bad_arguments(kwargs: dict, match: str) -> None:
    arguments = {"n_per_class": 1, "characters": ("A", "B"), **kwargs}
    with pytest.raises(ValueError, match=match):
        salient_glyphs(**arguments)


def test_code_memory_compares_each_batch_with_all_written_codes() -> None:
    """DPSH's reference: U[batch] = u.data, then θ = ½ u Uᵀ over the training set, gradient through u only."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    memory = HashCodeMemory(labels, 4)
    first = torch.tanh(torch.randn(3, 4))
    codes, refs = memory.update(torch.tensor([0, 1, 2]), first)
    assert torch.equal(codes, first) and refs.tolist() == [0, 1, 0]
    u = torch.tanh(torch.randn(2, 4, dtype=torch.float32)).requires_grad_()
    codes, refs = memory.update(torch.tensor([3, 1]), u)
    assert memory.written.tolist() == [True, True, True, True, False, False]
    assert torch.equal(codes[1], u.detach()[1]) and refs.tolist() == [0, 1, 0, 2]
    loss = dpsh_loss(u, labels[[3, 1]], ref_emb=codes, ref_labels=refs, quantization_weight=0.0)
    expected = 0.0
    for i, row in enumerate(u.detach().tolist()):
        for j, ref in enumerate(codes.tolist()):
            theta = 0.5 * sum(a * b for a, b in zip(row, ref))
            expected += _softplus(theta) - (theta if int(labels[[3, 1]][i]) == int(refs[j]) else 0.0)
    assert float(loss.detach()) == pytest.approx(expected / (2 * 4), rel=1e-5)
    loss.backward()
    assert u.grad is not None and memory.codes.grad is None
    assert set(dict(memory.named_buffers())) == {"codes", "written", "labels"}
    with pytest.raises(ValueError, match="codes must be"):
        memory.update(torch.tensor([0]), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="n_bits"):
        HashCodeMemory(labels, 0)


@pytest.mark.parametrize("attention", [True, False])
def test_attention_hashing_net(attention: bool) -> None:
    features = SalientFeatures(widths=(4, 8))
    model = AttentionHashingNet(12, features, features.num_features, attention=attention, hidden=16)
    x = torch.rand(3, 1, 12, 12)
    codes = model(x)
    assert codes.shape == (3, 12) and (codes.abs() < 1).all()
    maps = model.attention_map(x)
    assert (maps is not None) == attention
    if maps is not None:
        assert maps.shape == (3, 1, 12, 12)
    shifted = torch.roll(x, shifts=(2, 3), dims=(2, 3))
    assert features(x).shape == (3, 8) and features(shifted).shape == (3, 8)
    with pytest.raises(ValueError, match="widths"):
        SalientFeatures(widths=())


def test_attention_on_glyph_ratio() -> None:
    from pairloss.recipes.hashing import attention_on_glyph

    data = salient_glyphs(2, ("A", "B"), size=16, glyph_size=4, seed=0)

    class BoxAttention(AttentionHashingNet):
        def attention_map(self, images: torch.Tensor) -> torch.Tensor:
            return data.glyph_mask().float() + 1e-9

    features = SalientFeatures(widths=(4,))
    model = BoxAttention(8, features, 4)
    assert attention_on_glyph(model, data) == pytest.approx(16 * 16 / 16, rel=1e-4)  # all attention on the box
    plain = AttentionHashingNet(8, SalientFeatures(widths=(4,)), 4, attention=False)
    assert math.isnan(attention_on_glyph(plain, data))


def test_hashing_recipe_quick_run(tmp_path: Path) -> None:
    from pairloss.recipes.hashing import CLAIMS, METHODS, RECIPE

    tiny = {"fit_per_class": 6, "validation_per_class": 3, "test_per_class": 3, "pretrain_per_class": 3,
            "updates": 6, "validate_every": 3, "pretrain_updates": 4, "n_classes": 4}  # fmt: skip
    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=tiny)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick" and saved["data"]["images"]["fit (database)"] == 24
    assert set(saved["tuning"]) == {"ASH", "DPSH", "HashNet", "DSH"}
    assert all(len(entry["history"]) == 2 for entry in saved["tuning"].values())
    assert len(saved["verdicts"]) == 6 * len(CLAIMS)
    runs = saved["per_seed"]["0"]
    assert set(runs) == {m.name for m in METHODS}
    for name, run in runs.items():
        assert {f"mAP {b}b" for b in (16, 32, 64)} <= set(run["metrics"]), name
        assert all(math.isfinite(v) for v in run["metrics"].values()), name
    assert "attention on glyph ×" in runs["ASH"]["metrics"]
    assert "attention on glyph ×" not in runs["ASH without attention"]["metrics"]
    assert len(runs["ASH"]["extra"]["examples"]["images"]) == 4
    with pytest.raises(ValueError, match="bits"):
        run_experiment(RECIPE, out=tmp_path / "bad", seeds=1, quick=True, overrides={**tiny, "bits": [8, 32]})


@pytest.mark.slow
def test_hashing_recipe_full_run(tmp_path: Path) -> None:
    from pairloss.recipes.hashing import RECIPE

    result = run_experiment(RECIPE, out=tmp_path)
    assert result.mode == "full" and result.summary["ASH"]["mAP 32b"]["n"] == 5
    assert all(result.summary[m]["mAP 32b"]["mean"] > 0.1 for m in result.summary)  # above chance (10 classes)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_reducers_and_mined_pairs(name: str) -> None:
    """Hashing losses are pair losses: ``reducer="sum"`` sums what the default averages, and a miner's pairs
    replace the label pairs."""
    u, labels = _codes(8, seed=5), torch.tensor([0, 1, 0, 2, 1, 0, 3, 3])
    zero = dict(quantization_weight=0.0) if name in ("dpsh", "ash") else {}
    zero = {**zero, "regularization": 0.0} if name == "dsh" else zero
    mean = FUNCTIONS[name](u, labels, **zero).item()
    total = FUNCTIONS[name](u, labels, reducer="sum", **zero).item()
    if name == "hashnet":  # ½ (mean over similar + mean over dissimilar pairs): each half summed
        n_similar = int(((labels[:, None] == labels[None]).sum() - 8).item())
        assert total > 0 and n_similar > 0
    else:
        assert total == pytest.approx(mean * 8 * 7, rel=1e-10)
    if name == "dpsh":  # the listed pairs only: log(1 + e^θ) − θ on similar, log(1 + e^θ) on dissimilar pairs
        a, p, n = torch.tensor([0, 0, 5]), torch.tensor([2, 5, 2]), torch.tensor([1, 3, 4])
        mined = FUNCTIONS[name](u, labels, (a, p, a, n), **zero).item()
        theta_p, theta_n = 0.5 * (u[a] * u[p]).sum(1), 0.5 * (u[a] * u[n]).sum(1)
        terms = torch.cat([torch.nn.functional.softplus(-theta_p), torch.nn.functional.softplus(theta_n)])
        assert mined == pytest.approx(terms.mean().item(), rel=1e-10)
