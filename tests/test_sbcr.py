"""SBCR, its calibration module and the calibrated-ranking baselines; the simulator; a tiny recipe run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pairloss.data.ctr_sim import CTRSimulator
from pairloss.losses.calibrated import (
    BCERankNetLoss,
    JRCLoss,
    PiecewiseLinearCalibrator,
    RCRLoss,
    SBCRLoss,
    SelfBoostedPairwiseLoss,
    bce_ranknet_loss,
    jrc_loss,
    rcr_loss,
    sbcr_loss,
    self_boosted_pairwise_loss,
)
from pairloss.recipes import get_recipe, sbcr
from pairloss.recipes.protocol import PrepareContext, RunContext, run_experiment
from pairloss.recipes.sbcr import _RoundSchedule
from pairloss.training import Reporter


def _sp(t: float) -> float:
    return math.log1p(math.exp(-t))


def ref_self_boosted(s, y, ref_s, ref_y, sigma=1.0):
    total, count = 0.0, 0
    for i in range(len(s)):
        for j in range(ref_s.shape[1]):
            if ref_y[i, j] == -1:
                continue
            if y[i] > ref_y[i, j]:
                total += _sp(sigma * (float(s[i]) - float(ref_s[i, j])))
                count += 1
            elif ref_y[i, j] > y[i]:
                total += _sp(sigma * (float(ref_s[i, j]) - float(s[i])))
                count += 1
    return total / count if count else 0.0


def _groups():
    g = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y = torch.tensor([1.0, 0, 0, 0, 0, 1, 0, 1, 0, 1])
    return g, y


def _sb_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(6, generator=gen, dtype=torch.float64)
    y = torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=torch.float64)
    ref_s = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    ref_y = torch.tensor(
        [[0, 1, 0, -1], [1, 1, 0, 0], [-1, -1, -1, -1], [0, 0, 0, -1], [1, 0, -1, -1], [1, 1, 1, 1]],
        dtype=torch.float64,
    )
    ref_s[ref_y == -1] = float("inf")  # padded dumped scores may be anything
    return s, y, ref_s, ref_y


def test_self_boosted_matches_reference_and_gradcheck():
    s, y, ref_s, ref_y = _sb_inputs()
    for sigma in (1.0, 2.5):
        value = self_boosted_pairwise_loss(s, y, ref_s, ref_y, sigma=sigma)
        assert value.item() == pytest.approx(ref_self_boosted(s, y, ref_s, ref_y, sigma), rel=1e-12)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: self_boosted_pairwise_loss(x, y, ref_s, ref_y), (s,))
    assert SelfBoostedPairwiseLoss()(s, y, ref_s, ref_y).item() == pytest.approx(
        self_boosted_pairwise_loss(s, y, ref_s, ref_y).item()
    )


def test_self_boosted_no_pairs_and_no_grad_to_references():
    s = torch.tensor([0.3, -0.2], requires_grad=True)
    y = torch.tensor([1.0, 1.0])
    ref_s = torch.tensor([[0.5, 0.1], [0.2, 0.0]], requires_grad=True)
    ref_y = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    loss = self_boosted_pairwise_loss(s, y, ref_s, ref_y)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(s.grad == 0) and ref_s.grad is None


def test_calibrator_is_monotone_identity_at_start_and_bounded():
    torch.manual_seed(0)
    edges = torch.tensor([0.0, 0.05, 0.1, 0.3, 1.0])
    cal = PiecewiseLinearCalibrator(3, n_bins=4, hidden=8, edges=edges)
    p = torch.linspace(0, 1, 101)
    ctx = torch.randn(1, 3).expand(101, 3)
    assert torch.allclose(cal(p, ctx), p, atol=1e-6)
    torch.nn.init.normal_(cal.net[-1].weight)  # any weights: still monotone, g(0) = 0, g(1) = 1
    out = cal(p, ctx)
    assert torch.all(out.diff() > 0)
    assert out[0].item() == pytest.approx(0.0, abs=1e-6) and out[-1].item() == pytest.approx(1.0, abs=1e-6)
    # hand check of the interpolation inside a bin
    heights = torch.softmax(cal.net(ctx[:1]), -1)[0]
    knots = torch.cat([torch.zeros(1), heights.cumsum(0)])
    q = torch.tensor([0.2])
    expected = knots[2] + heights[2] * (0.2 - 0.1) / (0.3 - 0.1)
    assert cal(q, ctx[:1]).item() == pytest.approx(expected.item(), rel=1e-5)
    # the ranking probability gets no gradient from the calibrator
    s = torch.randn(5, requires_grad=True)
    cal(torch.sigmoid(s), torch.randn(5, 3)).sum().backward()
    assert s.grad is None


def test_calibrator_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseLinearCalibrator(2, n_bins=2, edges=torch.tensor([0.0, 0.7, 0.5]))
    with pytest.raises(ValueError, match="n_bins"):
        PiecewiseLinearCalibrator(2, n_bins=0)
    cal = PiecewiseLinearCalibrator(2, n_bins=2)
    with pytest.raises(ValueError, match="rows"):
        cal(torch.rand(3), torch.randn(2, 2))


def test_sbcr_loss_is_the_sum_of_its_parts():
    s, y, ref_s, ref_y = _sb_inputs(1)
    calibrated = torch.rand(6, dtype=torch.float64)
    expected = (
        F.binary_cross_entropy_with_logits(s, y)
        + 0.7 * self_boosted_pairwise_loss(s, y, ref_s, ref_y)
        + F.binary_cross_entropy(calibrated, y)
    )
    got = sbcr_loss(s, y, ref_s, ref_y, calibrated, alpha=0.7)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert SBCRLoss(alpha=0.7)(s, y, ref_s, ref_y, calibrated).item() == pytest.approx(got.item())


def test_bce_ranknet_matches_loops():
    g, y = _groups()
    s = torch.randn(10, dtype=torch.float64, requires_grad=True)
    pairs = [
        _sp(float(s[i].detach() - s[j].detach())) for i in range(10) for j in range(10) if g[i] == g[j] and y[i] > y[j]
    ]
    bce = (
        -sum(
            math.log(torch.sigmoid(s[i]).item()) if y[i] else math.log(1 - torch.sigmoid(s[i]).item())
            for i in range(10)
        )
        / 10
    )
    got = bce_ranknet_loss(s, y, g, alpha=0.3)
    assert got.item() == pytest.approx(bce + 0.3 * sum(pairs) / len(pairs), rel=1e-10)
    assert torch.autograd.gradcheck(lambda x: bce_ranknet_loss(x, y.double(), g), (s,))
    assert BCERankNetLoss(alpha=0.3)(s, y, g).item() == pytest.approx(got.item())


def test_jrc_matches_loops():
    g, y = _groups()
    f = torch.randn(10, 2, dtype=torch.float64, requires_grad=True)
    calib = rank = 0.0
    for i in range(10):
        p = 1 / (1 + math.exp(-(f[i, 1] - f[i, 0]).item()))
        calib -= math.log(p) if y[i] else math.log(1 - p)
        c = 1 if y[i] else 0
        z = sum(math.exp(f[j, c].item()) for j in range(10) if g[j] == g[i])
        rank -= f[i, c].item() - math.log(z)
    expected = 0.4 * calib / 10 + 0.6 * rank / 10
    assert jrc_loss(f, y, g, alpha=0.4).item() == pytest.approx(expected, rel=1e-10)
    assert torch.autograd.gradcheck(lambda x: jrc_loss(x, y.double(), g), (f,))
    assert JRCLoss(0.4)(f, y, g).item() == pytest.approx(expected, rel=1e-10)


def test_rcr_matches_loops():
    g, y = _groups()
    s = torch.randn(10, dtype=torch.float64, requires_grad=True)
    sig = torch.sigmoid(s).tolist()
    bce = -sum(math.log(sig[i]) if y[i] else math.log(1 - sig[i]) for i in range(10)) / 10
    lists = []
    for grp in g.unique().tolist():
        idx = [i for i in range(10) if g[i] == grp]
        clicks = sum(float(y[i]) for i in idx)
        if clicks == 0:
            continue
        z = sum(sig[i] for i in idx)
        lists.append(-sum(float(y[i]) / clicks * math.log(sig[i] / z) for i in idx))
    expected = 0.25 * bce + 0.75 * sum(lists) / len(lists)
    assert rcr_loss(s, y, g, alpha=0.75).item() == pytest.approx(expected, rel=1e-10)
    assert torch.autograd.gradcheck(lambda x: rcr_loss(x, y.double(), g), (s,))
    assert RCRLoss(0.75)(s, y, g).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: jrc_loss(torch.randn(3), torch.ones(3), torch.zeros(3, dtype=torch.long)), "2 dimensions"),
        (lambda: jrc_loss(torch.randn(3, 3), torch.ones(3), torch.zeros(3, dtype=torch.long)), "two logits"),
        (lambda: rcr_loss(torch.randn(3), torch.tensor([0.0, 2.0, 1.0]), torch.zeros(3, dtype=torch.long)), "binary"),
        (lambda: rcr_loss(torch.randn(3), torch.ones(3), torch.zeros(3)), "group_ids must be a 1-D integer"),
        (lambda: rcr_loss(torch.tensor([0.0, math.nan, 1.0]), torch.ones(3), torch.zeros(3, dtype=torch.long)), "NaN"),
        (lambda: bce_ranknet_loss(torch.randn(3), torch.ones(2), torch.zeros(3, dtype=torch.long)), "labels must"),
        (
            lambda: self_boosted_pairwise_loss(torch.randn(3), torch.ones(3), torch.randn(2, 4), torch.ones(2, 4)),
            "ref_",
        ),
        (
            lambda: self_boosted_pairwise_loss(
                torch.randn(1), torch.ones(1), torch.tensor([[math.nan]]), torch.zeros(1, 1)
            ),
            "ref_scores contain NaN",
        ),
        (lambda: jrc_loss(torch.randn(3, 2), torch.ones(3), torch.zeros(3, dtype=torch.long), alpha=2.0), "alpha"),
    ],
)
def test_calibrated_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


TINY = {
    "n_users": 60,
    "n_items": 50,
    "warmup_requests": 30,
    "round_requests": 40,
    "test_requests": 20,
    "min_candidates": 5,
    "max_candidates": 30,
    "batch_size": 128,
    "validate_every": 5,
}


def test_round_schedule_streams_over_the_rounds():
    world = CTRSimulator(n_users=30, n_items=40, seed=0)
    rounds = tuple(world.sample(12, seed=s, min_candidates=3, max_candidates=9) for s in range(3))
    schedule = _RoundSchedule(rounds, 16, grouped=True, epochs=2, seed=0)
    per_round = [-(-len(log) // 16) * 2 for log in rounds]
    assert schedule.updates == sum(per_round)
    seen = [schedule(step) for step in range(schedule.updates)]
    assert [r for r, _, _ in seen] == [r for r, n in enumerate(per_round) for _ in range(n)]
    for r, log in enumerate(rounds):
        first_epoch = [index for rr, start, index in seen if rr == r][: per_round[r] // 2]
        assert torch.equal(torch.cat(first_epoch).sort().values, torch.arange(len(log)))
        assert {start for rr, start, _ in seen if rr == r} == {sum(per_round[:r])}


@pytest.mark.parametrize("self_boost", [True, False])
def test_self_boosting_deploys_the_previous_round_model(monkeypatch, self_boost):
    recipe = get_recipe("sbcr")
    config = recipe.resolve_config(True, TINY)
    ctx = PrepareContext(config, Path("."), Reporter(), True)
    data = sbcr.prepare(ctx)
    deployed = []

    def spy(server, log):
        deployed.append({k: v.clone() for k, v in server.tower.state_dict().items()})
        return reference_lists_of(server, log)

    reference_lists_of = sbcr._round_references
    monkeypatch.setattr(sbcr, "_round_references", spy)
    method = next(m for m in recipe.methods if m.name == "SBCR (variant)")
    settings = {**method.settings, "self_boost": self_boost, "lr": 1e-2, "alpha": 1.0}
    run_ctx = RunContext(config, data.without_test(), method.name, settings, 0, "tuning", Path("unused.pt"), Reporter())
    result = sbcr.run(run_ctx)
    assert len(deployed) == config["rounds"]
    legacy = data.fit.legacy
    assert all(torch.equal(deployed[0][k], legacy["tower." + k]) for k in deployed[0])
    later_is_legacy = all(torch.equal(deployed[1][k], legacy["tower." + k]) for k in deployed[1])
    assert later_is_legacy != self_boost
    assert {"GAUC", "AUC", "LogLoss", "ECE", "PCOC", "PCOC error"} == set(result.metrics)
    assert result.metrics["PCOC error"] == pytest.approx(abs(result.metrics["PCOC"] - 1))


def test_quick_recipe_writes_outputs(tmp_path):
    recipe = get_recipe("sbcr")
    result = run_experiment(recipe, out=tmp_path, quick=True, overrides={**TINY, "trials": 1})
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick" and saved["seeds"] == [0, 1]
    assert set(saved["tuning"]) == {"BCE", "BCE+RankNet", "JRC", "RCR", "SBCR (variant)"}
    assert all(entry["trials"] == 1 for entry in saved["tuning"].values())
    rows = saved["summary"]
    assert {m.name for m in recipe.methods} == set(rows)
    for row in rows.values():
        for metric in ("AUC", "GAUC", "LogLoss", "ECE", "PCOC"):
            assert math.isfinite(row[metric]["mean"])
    claims = {(v["claim"], v["metric"]) for v in saved["verdicts"]}
    assert ("SBCR beats JRC", "GAUC") in claims and ("shuffling helps SBCR", "LogLoss") in claims
    assert ("SBCR beats RCR", "PCOC error") in claims
    assert all(v["verdict"] in ("held", "not held", "inconclusive") for v in saved["verdicts"])
    # the reference rows do not depend on the seed
    oracle = [saved["per_seed"][s]["oracle (true p)"]["metrics"]["GAUC"] for s in ("0", "1")]
    assert oracle[0] == oracle[1]


@pytest.mark.slow
def test_full_recipe(tmp_path):
    result = run_experiment(get_recipe("sbcr"), out=tmp_path)
    assert result.mode == "full" and len(result.per_seed) == 5
    assert result.summary["SBCR (variant)"]["GAUC"]["mean"] > result.summary["legacy server (BCE)"]["GAUC"]["mean"]
