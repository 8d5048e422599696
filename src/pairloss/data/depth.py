"""A procedural peg-in-hole depth-image task with a simulated and a "real" (sensor-model) renderer.

Stands in for Viereck, Saenko, Platt (CoRL 2017/2018), who learn a visuomotor policy from simulated depth images
and transfer it to a real depth camera with a pairwise loss on (simulated, real) images of the same scene state.
No robot or depth camera is available here, so both domains are drawn:

* **State** (metres, table frame): the hole centre ``h ~ U([−0.02, 0.02]²)`` and the peg offset ``δ = g − h``
  (peg centre ``g``), ``δ ~ U([−0.04, 0.04]²)``, except a fraction ``aligned_fraction`` of states drawn within
  the insertion tolerance ``|δ|_∞ ≤ tol = 0.01`` so that every action is common.
* **Action** (the label): the move that reduces the alignment error: ``−x, +x, −y, +y`` (a step of ``0.01``
  along the axis of the largest ``|δ|``, against its sign) or ``insert`` when ``|δ|_∞ ≤ tol``.
  :func:`apply_action` applies it; the move always reduces ``‖δ‖``.
* **Simulated rendering** (:func:`render_depth`): a top-down orthographic depth camera ``height ~ U(0.48, 0.52)``
  above the table, tilted by ``~U(−0.05, 0.05)`` rad about each axis (the table plane becomes a depth ramp),
  field of view ``0.16 × 0.16`` m on ``size × size`` pixels (32 by default: 5 mm per pixel, so the 1 cm step
  and tolerance span two pixels), 3 × 3 super-sampled: table at the plane's depth, a hole
  of radius 0.025 m and depth 0.03 m, a peg of radius 0.018 m whose top is 0.08 m above the table (it occludes
  the hole).
* **"Real" rendering** (:func:`real_sensor`) of the same state and camera pose: a calibration error (the camera is
  0.006 m off in x and y, depths are scaled by 1.02 and offset by +0.01 m), a Gaussian blur (σ = 0.6 px),
  multiplicative noise ``d (1 + 0.005 ε)``, quantisation to 2 mm, and missing pixels (depth 0) at depth edges
  (probability 0.3 where the clean depth jumps by more than 1.5 cm to a neighbour) plus 1% random dropouts.

Everything is drawn from ``numpy.random.Generator`` objects seeded by the ``seed`` argument: equal arguments
give equal images. Network inputs are :func:`normalize_depth` of the depth maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import Tensor

__all__ = [
    "ACTIONS",
    "DepthTask",
    "action_labels",
    "apply_action",
    "normalize_depth",
    "real_sensor",
    "render_depth",
    "sample_states",
    "simulate_depth_task",
]

#: Action names, by label.
ACTIONS = ("-x", "+x", "-y", "+y", "insert")
TOLERANCE = 0.01
STEP = 0.01
FIELD = 0.16
HOLE_RADIUS, HOLE_DEPTH = 0.025, 0.03
PEG_RADIUS, PEG_HEIGHT = 0.018, 0.08
_SUPERSAMPLE = 3
#: Half-widths of the uniform ranges of the hole centre and of the peg's offset from it (metres).
HOLE_RANGE, OFFSET_RANGE = 0.02, 0.04


def sample_states(n: int, seed: int = 0, aligned_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scene states and camera poses: ``states [n, 4] = (h_x, h_y, δ_x, δ_y)``, ``poses [n, 3] =
    (height, tilt_x, tilt_y)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    hole = rng.uniform(-HOLE_RANGE, HOLE_RANGE, size=(n, 2))
    offset = rng.uniform(-OFFSET_RANGE, OFFSET_RANGE, size=(n, 2))
    aligned = rng.random(n) < aligned_fraction
    offset[aligned] = rng.uniform(-TOLERANCE, TOLERANCE, size=(int(aligned.sum()), 2))
    poses = np.column_stack([rng.uniform(0.48, 0.52, n), rng.uniform(-0.05, 0.05, (n, 2))])
    return np.column_stack([hole, offset]), poses


def action_labels(states: np.ndarray) -> np.ndarray:
    """The corrective action of each state: ``insert`` (4) when ``|δ|_∞ ≤ tol``, else the move along the axis of
    the largest ``|δ|`` against its sign (``−x``=0, ``+x``=1, ``−y``=2, ``+y``=3)."""
    offset = states[:, 2:4]
    axis = np.abs(offset).argmax(axis=1)
    positive = offset[np.arange(len(offset)), axis] > 0
    labels = 2 * axis + (~positive).astype(np.int64)
    return np.where(np.abs(offset).max(axis=1) <= TOLERANCE, 4, labels).astype(np.int64)


def apply_action(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The states after moving the peg by ``STEP`` along each action (``insert`` leaves it in place)."""
    moves = np.array([[-STEP, 0.0], [STEP, 0.0], [0.0, -STEP], [0.0, STEP], [0.0, 0.0]])
    out = states.copy()
    out[:, 2:4] += moves[actions]
    return out


def render_depth(
    states: np.ndarray, poses: np.ndarray, size: int = 32, camera_offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Clean depth maps ``[n, size, size]`` (metres from the camera) of the states seen from the poses."""
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    fine = size * _SUPERSAMPLE
    axis = (np.arange(fine) + 0.5) / fine * FIELD - FIELD / 2
    x = axis[None, None, :] + camera_offset[0]
    y = axis[None, :, None] + camera_offset[1]
    height, tilt_x, tilt_y = (poses[:, i, None, None] for i in range(3))
    table = height + x * np.tan(tilt_x) + y * np.tan(tilt_y)
    hole_x, hole_y = states[:, 0, None, None], states[:, 1, None, None]
    peg_x, peg_y = hole_x + states[:, 2, None, None], hole_y + states[:, 3, None, None]
    depth = table + HOLE_DEPTH * ((x - hole_x) ** 2 + (y - hole_y) ** 2 <= HOLE_RADIUS**2)
    depth = np.where((x - peg_x) ** 2 + (y - peg_y) ** 2 <= PEG_RADIUS**2, table - PEG_HEIGHT, depth)
    return depth.reshape(-1, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))


def real_sensor(states: np.ndarray, poses: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """Depth maps of the same states through the "real" sensor model (see the module docstring)."""
    rng = np.random.default_rng(seed)
    clean = render_depth(states, poses, size, camera_offset=(0.006, 0.006)) * 1.02 + 0.01
    depth = gaussian_filter(clean, sigma=(0, 0.6, 0.6), mode="nearest")
    depth = depth * (1 + 0.005 * rng.standard_normal(depth.shape))
    depth = np.round(depth / 0.002) * 0.002
    jump = np.zeros_like(clean, dtype=bool)
    jump[:, 1:, :] |= np.abs(np.diff(clean, axis=1)) > 0.015
    jump[:, :-1, :] |= np.abs(np.diff(clean, axis=1)) > 0.015
    jump[:, :, 1:] |= np.abs(np.diff(clean, axis=2)) > 0.015
    jump[:, :, :-1] |= np.abs(np.diff(clean, axis=2)) > 0.015
    missing = (jump & (rng.random(depth.shape) < 0.3)) | (rng.random(depth.shape) < 0.01)
    return np.where(missing, 0.0, depth)


def normalize_depth(depth: np.ndarray) -> Tensor:
    """Network input ``[n, 1, H, W]`` float32: ``(d − 0.5) / 0.05`` clipped to ``[−3, 3]`` (missing pixels → −3)."""
    return torch.from_numpy(np.clip((depth - 0.5) / 0.05, -3.0, 3.0).astype(np.float32))[:, None]


@dataclass(frozen=True)
class DepthTask:
    """Images of one set of states: ``sim`` and ``real`` ``[n, 1, H, W]`` are the same states (pairs);
    ``actions [n]`` int64; ``states [n, 4]``."""

    states: np.ndarray
    sim: Tensor
    real: Tensor
    actions: Tensor


def simulate_depth_task(n: int, seed: int = 0, size: int = 32, aligned_fraction: float = 0.2) -> DepthTask:
    """``n`` states rendered by both the simulator and the real sensor model, with their action labels."""
    states, poses = sample_states(n, seed, aligned_fraction)
    sim = normalize_depth(render_depth(states, poses, size))
    real = normalize_depth(real_sensor(states, poses, size, seed=seed + 1))
    return DepthTask(states, sim, real, torch.from_numpy(action_labels(states)))
