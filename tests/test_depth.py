"""The depth-image simulator: determinism, geometry of the action labels, rendering and the sensor model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairloss.data.depth import (
    ACTIONS,
    FIELD,
    HOLE_DEPTH,
    PEG_HEIGHT,
    TOLERANCE,
    action_labels,
    apply_action,
    real_sensor,
    render_depth,
    sample_states,
    simulate_depth_task,
)


def test_seeded_and_deterministic():
    a, b, c = simulate_depth_task(50, seed=3), simulate_depth_task(50, seed=3), simulate_depth_task(50, seed=4)
    assert torch.equal(a.sim, b.sim) and torch.equal(a.real, b.real) and torch.equal(a.actions, b.actions)
    assert not torch.equal(a.sim, c.sim)
    assert a.sim.shape == (50, 1, 32, 32) and a.sim.dtype == torch.float32


def test_action_moves_towards_the_goal():
    states, _ = sample_states(2000, seed=0)
    actions = action_labels(states)
    assert set(np.unique(actions)) == set(range(len(ACTIONS)))
    error = np.linalg.norm(states[:, 2:4], axis=1)
    after = np.linalg.norm(apply_action(states, actions)[:, 2:4], axis=1)
    move = actions != 4
    assert (after[move] < error[move]).all()
    assert (np.abs(states[~move, 2:4]).max(axis=1) <= TOLERANCE).all()
    assert (np.abs(states[move, 2:4]).max(axis=1) > TOLERANCE).all()


def test_hand_made_labels():
    states = np.array(
        [[0, 0, 0.03, 0.01], [0, 0, -0.03, 0.0], [0, 0, 0.01, -0.04], [0, 0, 0.0, 0.02], [0, 0, 0.005, 0]]
    )
    assert [ACTIONS[a] for a in action_labels(states)] == ["-x", "+x", "+y", "-y", "insert"]


def test_following_the_labels_reaches_insertion():
    states, _ = sample_states(300, seed=1, aligned_fraction=0.0)
    for _ in range(15):
        states = apply_action(states, action_labels(states))
    assert (action_labels(states) == 4).all()


def test_rendered_geometry():
    """Flat camera at 0.5 m: table at 0.5, the hole centre 0.03 deeper, the peg centre 0.08 closer."""
    states = np.array([[0.0, 0.0, 0.04, 0.0]])
    poses = np.array([[0.5, 0.0, 0.0]])
    depth = render_depth(states, poses, size=40)[0]
    pixel = FIELD / 40
    centre = 20  # pixel index of x = 0 (pixel centres at ±pixel/2)
    assert depth[0, 0] == pytest.approx(0.5)
    assert depth[centre, centre] == pytest.approx(0.5 + HOLE_DEPTH)
    peg_column = centre + round(0.04 / pixel)
    assert depth[centre, peg_column] == pytest.approx(0.5 - PEG_HEIGHT)


def test_real_sensor_effects():
    states, poses = sample_states(200, seed=2)
    clean = render_depth(states, poses)
    real = real_sensor(states, poses, seed=0)
    assert np.array_equal(real, real_sensor(states, poses, seed=0))
    missing = real == 0
    assert 0.01 < missing.mean() < 0.2
    valid = real[~missing]
    assert np.allclose(valid / 0.002, np.round(valid / 0.002))
    assert np.median(valid - clean[~missing]) > 0.005  # calibration offset and scale make depths larger


def test_invalid_arguments():
    with pytest.raises(ValueError, match="size"):
        render_depth(*sample_states(2), size=4)
    with pytest.raises(ValueError, match="n must be"):
        sample_states(-1)
