"""Invariants of the road-scene simulator: determinism, counterfactual importance, features and rasters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairloss.data.driving import (
    AGENT_FEATURE_NAMES,
    DrivingScenes,
    agent_features,
    counterfactual_importance,
    perceive,
    rasterize_agents,
    simulate_driving_scenes,
)


@pytest.fixture(scope="module")
def scenes():
    return simulate_driving_scenes(60, n_min=5, n_max=20, seed=1)


def _scene(agents: list[tuple[float, float, float, float, int]], ego_speed: float = 10.0) -> np.ndarray:
    """Importance of hand-placed agents ``(x, y, heading, speed, kind)`` in one scene."""
    a = np.array(agents, dtype=float)
    positions = a[None, :, :2]
    velocities = (np.stack([np.cos(a[:, 2]), np.sin(a[:, 2])], -1) * a[:, 3:4])[None]
    kinds = a[None, :, 4].astype(int)
    mask = np.ones((1, len(agents)), dtype=bool)
    return counterfactual_importance(positions, velocities, kinds, mask, np.array([ego_speed]))[0]


def test_seeded_and_deterministic(scenes) -> None:
    again = simulate_driving_scenes(60, n_min=5, n_max=20, seed=1)
    other = simulate_driving_scenes(60, n_min=5, n_max=20, seed=2)
    for field in ("positions", "headings", "speeds", "kinds", "mask", "importance"):
        assert torch.equal(getattr(scenes, field), getattr(again, field))
    assert not torch.equal(scenes.positions, other.positions)


def test_agent_counts_and_padding(scenes) -> None:
    counts = scenes.mask.sum(1)
    assert int(counts.min()) >= 5 and int(counts.max()) <= 20
    assert bool((scenes.importance[~scenes.mask] == 0).all())
    assert bool((scenes.importance >= 0).all())
    assert bool((scenes.importance > 0.05).any(1).float().mean() > 0.5)  # most scenes have an important agent


def test_stopped_lead_vehicle_matters_and_far_agents_do_not() -> None:
    importance = _scene(
        [
            (30.0, 0.0, 0.0, 0.0, 0),  # stopped vehicle in the ego lane
            (60.0, 0.0, 0.0, 0.0, 0),  # another one behind it: hidden by the first
            (40.0, 50.0, 0.0, 1.5, 1),  # pedestrian far from the road, walking parallel to it
            (20.0, 3.5, np.pi, 10.0, 0),  # oncoming vehicle in its own lane
            (-15.0, 0.0, 0.0, 5.0, 0),  # vehicle behind the ego
        ]
    )
    assert importance[0] > 1.0
    assert importance[1] == 0.0
    assert importance[2] == 0.0
    assert importance[3] == 0.0
    assert importance[4] == 0.0


def test_crossing_pedestrian_makes_the_ego_yield() -> None:
    crossing = _scene([(25.0, -6.0, np.pi / 2, 1.5, 1)])
    walking_away = _scene([(25.0, -6.0, -np.pi / 2, 1.5, 1)])
    assert crossing[0] > 0.1
    assert walking_away[0] == 0.0


def test_agents_that_never_approach_the_path_have_zero_importance(scenes) -> None:
    lateral_speed = (scenes.speeds * torch.sin(scenes.headings)).abs()
    far = scenes.mask & (lateral_speed < 1e-6) & (scenes.positions[..., 1].abs() > 3.5)
    assert int(far.sum()) > 20
    assert bool((scenes.importance[far] == 0).all())


def test_features(scenes) -> None:
    features = agent_features(scenes)
    assert features.shape == (*scenes.mask.shape, len(AGENT_FEATURE_NAMES))
    assert bool(torch.isfinite(features).all())
    assert bool((features[~scenes.mask] == 0).all())
    kind_columns = features[..., 11:14][scenes.mask]
    assert torch.equal(kind_columns.sum(-1), torch.ones(kind_columns.shape[0]))
    ttc = features[..., AGENT_FEATURE_NAMES.index("time_to_conflict")]
    assert float(ttc.max()) <= 1.0 and float(ttc.min()) >= 0.0


def _line(xs: list[float], ys: list[float]) -> DrivingScenes:
    """One scene of stopped vehicles at ``(x, y)`` (the last one padding)."""
    n = len(xs)
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -1] = False
    return DrivingScenes(
        positions=torch.tensor([list(zip(xs, ys))]) * mask[..., None],
        headings=torch.zeros(1, n),
        speeds=torch.zeros(1, n),
        kinds=torch.zeros(1, n, dtype=torch.long),
        mask=mask,
        ego_speed=torch.tensor([10.0]),
        crossing_x=torch.tensor([60.0]),
        importance=torch.zeros(1, n),
    )


def test_occlusion_cues_count_the_ego_lane_in_front_of_an_agent() -> None:
    # Agents at x = 10, 20, 30 in the ego lane, one at x = 25 in the next lane, one behind the ego, one padding.
    scene = _line([10.0, 20.0, 30.0, 25.0, -10.0, 0.0], [0.0, 0.5, -0.5, -3.5, 0.0, 0.0])
    features = agent_features(scene)[0]
    blockers = features[:, AGENT_FEATURE_NAMES.index("corridor_blockers")]
    gap = features[:, AGENT_FEATURE_NAMES.index("blocker_gap")]
    assert blockers.tolist() == [0.0, 1.0, 2.0, 2.0, 0.0, 0.0]  # the next-lane agent has the two in-lane ones ahead
    assert gap.tolist() == pytest.approx([1.0, 10 / 50, 10 / 50, 5 / 50, 1.0, 0.0])


def test_perceive_adds_noise_and_keeps_the_labels(scenes) -> None:
    seen = perceive(scenes, position_noise=0.5, speed_noise=0.5, heading_noise=0.05, seed=3)
    assert torch.equal(seen.importance, scenes.importance) and torch.equal(seen.mask, scenes.mask)
    error = (seen.positions - scenes.positions)[scenes.mask]
    assert float(error.std()) == pytest.approx(0.5, rel=0.15)
    assert bool((seen.positions[~scenes.mask] == 0).all()) and bool((seen.speeds >= 0).all())
    assert torch.equal(perceive(scenes, seed=3).positions, perceive(scenes, seed=3).positions)
    exact = perceive(scenes, position_noise=0, speed_noise=0, heading_noise=0)
    assert torch.equal(exact.positions, scenes.positions) and torch.equal(exact.speeds, scenes.speeds)
    with pytest.raises(ValueError, match="speed_noise"):
        perceive(scenes, speed_noise=-1.0)


def test_rasters(scenes) -> None:
    rasters = rasterize_agents(scenes, grid=16, cell=4.0)
    assert rasters.shape == (*scenes.mask.shape, 4, 16, 16)
    assert bool((rasters[~scenes.mask] == 0).all())
    real = rasters[scenes.mask]
    # The agent itself sits at the centre of its own raster at t = 0.
    assert bool((real[:, 3, 8, 8] >= 1).all())
    # Another agent 6 m ahead and 3 m to the left shows in the other-agents channel at its offset.
    pair = DrivingScenes(
        positions=torch.tensor([[[10.0, 0.0], [16.0, 3.0]]]),
        headings=torch.zeros(1, 2),
        speeds=torch.tensor([[5.0, 10.0]]),
        kinds=torch.zeros(1, 2, dtype=torch.long),
        mask=torch.ones(1, 2, dtype=torch.bool),
        ego_speed=torch.tensor([8.0]),
        crossing_x=torch.tensor([40.0]),
        importance=torch.zeros(1, 2),
    )
    small = rasterize_agents(pair, grid=16, cell=4.0)
    assert float(small[0, 0, 2, 8, 9]) == pytest.approx(1.5)  # row = y, column = x; value speed / 10 + 0.5
    assert float(small[0, 0, 2].sum()) == pytest.approx(1.5)
    assert float(small[0, 1, 2, 7, 6]) == pytest.approx(1.0)
    assert float(rasters[..., 0, :, :].max()) == 1.0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n_scenes"):
        simulate_driving_scenes(0)
    with pytest.raises(ValueError, match="n_min"):
        simulate_driving_scenes(3, n_min=10, n_max=5)
