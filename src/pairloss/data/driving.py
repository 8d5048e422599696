"""Road scenes for agent prioritisation, with ground-truth importance from a counterfactual planner.

Self-driving logs cannot be had here, so this module draws 2-D scenes and labels each agent by how much it changes
the ego vehicle's plan, as Refaat et al. do with their planner. Everything is vectorised over scenes and agents and
drawn from one ``numpy.random.Generator`` seeded by ``seed``: equal arguments give equal scenes.

Generative model (ego frame at ``t = 0``: the ego is at the origin, heading ``+x`` at speed ``v0 ~ U(6, 14)`` m/s,
its planned path is the centre line ``y = 0``):

* **Road**: three lanes of width 3.5 m centred on ``y = −3.5`` (same direction), ``0`` (ego lane) and ``+3.5``
  (oncoming), sidewalks for ``5.25 < |y| < 9``, and a crossing street of width 7 m at ``x = x_c ~ U(25, 70)``.
* **Agents**: ``n ~ U{n_min..n_max}`` per scene, each with a role drawn with fixed probabilities: lead vehicle in
  the ego lane ahead, vehicle behind the ego, vehicle in the same-direction lane (20% of them cut in towards the
  ego lane at 0.5–1.2 m/s), oncoming vehicle, cross-traffic vehicle driving towards the road on the crossing
  street, pedestrian walking along a sidewalk, pedestrian crossing the road, cyclist riding at the right edge of
  the ego lane. Kinds: vehicle (4.5 × 2 m), pedestrian (0.8 × 0.8 m), cyclist (1.8 × 0.8 m). Agents move at
  constant velocity (the usual baseline prediction).
* **Planner**: an IDM speed planner along the path over ``T = 6`` s in steps of 0.2 s (desired speed 15 m/s,
  ``a_max = 2``, comfortable braking 3, hardest braking 8 m/s², standstill gap 2 m, headway 1.2 s). An agent is
  an obstacle at time ``t`` when it was ahead of the ego at ``t = 0``, is still ahead, and its predicted lateral
  position over ``[t, t + 1.5 s]`` comes within the ego corridor (half the ego width + the agent's lateral
  half-extent + 0.3 m): the planner then follows it as IDM follows a leader (agents not yet in the corridor count
  as standing still where they will cross, which is yielding). The most constraining obstacle sets the
  acceleration ``a = a_max (1 − (v/v_des)^4 − max_k (s*_k / s_k)^2)`` with
  ``s*_k = s0 + v·T_h + v (v − v_k)/(2√(a_max b))``.
* **Importance** of agent ``k``: the planner runs with all agents and with all agents but ``k`` (all ``A + 1``
  rollouts at once), and ``importance_k = mean_t |v_all(t) − v_{−k}(t)|`` in m/s. An agent that never becomes an
  obstacle leaves every rollout unchanged and has importance exactly 0; so does an obstacle hidden behind a more
  constraining one (the counterfactual credits only what changes the plan).
* **Perception** (:func:`perceive`): the models never see the true states. Every agent's position, speed and
  heading are observed with Gaussian noise (tracking error), and the importance labels stay those of the true
  scene. Engineered features and rasters are both computed from the perceived scene.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AGENT_FEATURE_NAMES",
    "KINDS",
    "DrivingScenes",
    "agent_features",
    "counterfactual_importance",
    "perceive",
    "plan_speeds",
    "rasterize_agents",
    "simulate_driving_scenes",
]

KINDS = ("vehicle", "pedestrian", "cyclist")
_HALF_LENGTH = np.array([2.25, 0.4, 0.9])
_HALF_WIDTH = np.array([1.0, 0.4, 0.4])
_EGO_HALF_LENGTH, _EGO_HALF_WIDTH = 2.25, 1.0
_LANE, _ROAD_HALF_WIDTH, _SIDEWALK = 3.5, 5.25, 9.0
# Roles: lead, behind, same-direction lane, oncoming, cross traffic, sidewalk pedestrian, crossing pedestrian,
# cyclist; their kinds and probabilities.
_ROLE_KIND = np.array([0, 0, 0, 0, 0, 1, 1, 2])
_ROLE_P = np.array([0.08, 0.08, 0.16, 0.16, 0.10, 0.16, 0.12, 0.14])
_PLANNER = {"horizon": 6.0, "dt": 0.2, "v_des": 15.0, "a_max": 2.0, "b": 3.0, "b_max": 8.0, "s0": 2.0,
            "headway": 1.2, "lookahead": 1.5, "corridor_margin": 0.3}  # fmt: skip

AGENT_FEATURE_NAMES = (
    "log_distance",
    "longitudinal",
    "abs_lateral",
    "speed",
    "velocity_x",
    "closing_lateral_speed",
    "relative_speed_x",
    "time_to_conflict",
    "in_ego_lane",
    "adjacent_lane",
    "off_road",
    "is_vehicle",
    "is_pedestrian",
    "is_cyclist",
    "ahead",
    "corridor_blockers",
    "blocker_gap",
)


@dataclass(frozen=True)
class DrivingScenes:
    """``S`` scenes with up to ``A`` agents each (padded; ``mask`` marks the real agents), ego frame at ``t = 0``.

    Attributes:
        positions: ``[S, A, 2]`` agent centres in metres.
        headings: ``[S, A]`` headings in radians (0 = along the ego's path).
        speeds: ``[S, A]`` speeds in m/s.
        kinds: ``[S, A]`` indices into :data:`KINDS`.
        mask: ``[S, A]`` bool, real agents.
        ego_speed: ``[S]`` ego speed at ``t = 0``.
        crossing_x: ``[S]`` position of the crossing street along the path.
        importance: ``[S, A]`` ground-truth importance (mean speed change of the plan, m/s; 0 on padding).
    """

    positions: Tensor
    headings: Tensor
    speeds: Tensor
    kinds: Tensor
    mask: Tensor
    ego_speed: Tensor
    crossing_x: Tensor
    importance: Tensor

    @property
    def n_scenes(self) -> int:
        return int(self.mask.shape[0])

    def velocities(self) -> Tensor:
        """``[S, A, 2]`` velocity vectors."""
        return torch.stack([torch.cos(self.headings), torch.sin(self.headings)], -1) * self.speeds[..., None]


def _extents(heading: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitudinal and lateral half-extents (along ``x`` and ``y``) of each agent's box."""
    c, s = np.abs(np.cos(heading)), np.abs(np.sin(heading))
    half_len, half_wid = _HALF_LENGTH[kind], _HALF_WIDTH[kind]
    return c * half_len + s * half_wid, s * half_len + c * half_wid


def plan_speeds(
    positions: np.ndarray,
    velocities: np.ndarray,
    kinds: np.ndarray,
    active: np.ndarray,
    ego_speed: np.ndarray,
) -> np.ndarray:
    """The IDM plan's speed profile for a batch of rollouts.

    Args:
        positions, velocities: ``[S, A, 2]`` agent states at ``t = 0``.
        kinds: ``[S, A]`` agent kinds.
        active: ``[S, R, A]`` bool, which agents each of the ``R`` rollouts of a scene takes into account.
        ego_speed: ``[S]`` ego speed at ``t = 0``.

    Returns:
        ``[S, R, n_steps]`` ego speeds after each step.
    """
    p = _PLANNER
    n_steps = round(p["horizon"] / p["dt"])
    heading = np.arctan2(velocities[..., 1], velocities[..., 0])
    ext_lon, ext_lat = _extents(heading, kinds)
    corridor = _EGO_HALF_WIDTH + ext_lat + p["corridor_margin"]  # [S, A]
    initially_ahead = positions[..., 0] - ext_lon > _EGO_HALF_LENGTH
    candidate = active & initially_ahead[:, None, :]
    x = np.zeros(active.shape[:2])
    v = np.broadcast_to(ego_speed[:, None], active.shape[:2]).astype(np.float64).copy()
    speeds = np.empty((*active.shape[:2], n_steps))
    root_ab = 2 * math.sqrt(p["a_max"] * p["b"])
    for step in range(n_steps):
        t = step * p["dt"]
        pos = positions + velocities * t  # [S, A, 2]
        y0, y1 = pos[..., 1], pos[..., 1] + velocities[..., 1] * p["lookahead"]
        nearest = np.where(y0 * y1 <= 0, 0.0, np.minimum(np.abs(y0), np.abs(y1)))
        in_corridor_now = np.abs(y0) < corridor
        conflict = nearest < corridor  # [S, A]
        lead_speed = np.where(in_corridor_now, velocities[..., 0], 0.0)
        gap = pos[:, None, :, 0] - x[..., None] - _EGO_HALF_LENGTH - ext_lon[:, None, :]  # [S, R, A]
        obstacle = candidate & conflict[:, None, :] & (gap > -ext_lon[:, None, :])
        gap = np.maximum(gap, 0.1)
        vv = v[..., None]
        desired = p["s0"] + np.maximum(0.0, vv * p["headway"] + vv * (vv - lead_speed[:, None, :]) / root_ab)
        interaction = np.where(obstacle, (desired / gap) ** 2, 0.0).max(-1, initial=0.0)
        accel = p["a_max"] * (1 - (v / p["v_des"]) ** 4 - interaction)
        v = np.maximum(v + np.maximum(accel, -p["b_max"]) * p["dt"], 0.0)
        x = x + v * p["dt"]
        speeds[..., step] = v
    return speeds


def counterfactual_importance(
    positions: np.ndarray,
    velocities: np.ndarray,
    kinds: np.ndarray,
    mask: np.ndarray,
    ego_speed: np.ndarray,
) -> np.ndarray:
    """``[S, A]`` importance ``mean_t |v_all(t) − v_{−k}(t)|`` of every real agent (0 on padding).

    Rollout 0 of each scene sees every real agent, rollout ``k + 1`` every real agent but ``k``; all ``A + 1``
    rollouts run at once in :func:`plan_speeds`. Inputs as there, with ``mask [S, A]`` marking real agents.
    """
    n_scenes, n_agents = mask.shape
    active = np.broadcast_to(mask[:, None, :], (n_scenes, n_agents + 1, n_agents)).copy()
    active[:, np.arange(1, n_agents + 1), np.arange(n_agents)] = False
    plans = plan_speeds(positions, velocities, kinds, active, ego_speed)
    return np.abs(plans[:, 1:] - plans[:, :1]).mean(-1) * mask


def simulate_driving_scenes(n_scenes: int = 500, *, n_min: int = 5, n_max: int = 40, seed: int = 0) -> DrivingScenes:
    """Draw ``n_scenes`` scenes with ``n_min..n_max`` agents and label every agent's importance (see module doc)."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    if not 1 <= n_min <= n_max:
        raise ValueError(f"need 1 <= n_min <= n_max, got {n_min} and {n_max}")
    rng = np.random.default_rng(seed)
    shape = (n_scenes, n_max)
    count = rng.integers(n_min, n_max + 1, n_scenes)
    mask = np.arange(n_max)[None, :] < count[:, None]
    role = rng.choice(len(_ROLE_P), size=shape, p=_ROLE_P)
    kind = _ROLE_KIND[role]
    ego_speed = rng.uniform(6, 14, n_scenes)
    crossing_x = rng.uniform(25, 70, n_scenes)
    side = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    u = rng.random((8, *shape))  # independent uniforms for the role-specific draws
    x = np.zeros(shape)
    y = np.zeros(shape)
    heading = np.zeros(shape)
    speed = np.zeros(shape)

    def put(r: int, xs: np.ndarray, ys: np.ndarray, hs: np.ndarray, vs: np.ndarray) -> None:
        sel = role == r
        x[sel], y[sel], heading[sel], speed[sel] = xs[sel], ys[sel], hs[sel], vs[sel]

    zeros = np.zeros(shape)
    put(0, 8 + 82 * u[0], 0.3 * (u[1] - 0.5), zeros, 14 * u[2])  # lead vehicle in the ego lane
    put(1, -40 + 32 * u[0], 0.3 * (u[1] - 0.5), zeros, 3 + 7 * u[2])  # behind the ego
    cut_in = u[3] < 0.2
    put(2, -30 + 120 * u[0], -_LANE + 0.3 * (u[1] - 0.5),
        np.where(cut_in, np.arctan2(0.5 + 0.7 * u[4], 5 + 10 * u[2]), 0.0), 5 + 10 * u[2])  # fmt: skip
    put(3, 120 * u[0], _LANE + 0.3 * (u[1] - 0.5), np.full(shape, math.pi), 5 + 10 * u[2])  # oncoming
    put(4, crossing_x[:, None] - side * 1.75, side * (8 + 42 * u[0]), -side * math.pi / 2, 12 * u[2])  # cross
    put(5, -20 + 110 * u[0], side * (5.5 + 3 * u[1]), np.where(u[3] < 0.5, 0.0, math.pi), 0.5 + 1.3 * u[2])
    put(6, 5 + 75 * u[0], side * (5.5 + 3.5 * u[1]), -side * math.pi / 2, 0.8 + 1.2 * u[2])  # crossing ped
    put(7, 5 + 85 * u[0], -(1.6 + 0.9 * u[1]), zeros, 3 + 4 * u[2])  # cyclist at the lane edge

    positions = np.stack([x, y], -1) * mask[..., None]
    velocities = np.stack([np.cos(heading), np.sin(heading)], -1) * (speed * mask)[..., None]
    importance = counterfactual_importance(positions, velocities, kind, mask, ego_speed)

    def t32(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return DrivingScenes(
        positions=t32(positions),
        headings=t32(heading * mask),
        speeds=t32(speed * mask),
        kinds=torch.from_numpy(kind * mask),
        mask=torch.from_numpy(mask),
        ego_speed=t32(ego_speed),
        crossing_x=t32(crossing_x),
        importance=t32(importance),
    )


def perceive(
    scenes: DrivingScenes,
    *,
    position_noise: float = 0.5,
    speed_noise: float = 0.5,
    heading_noise: float = 0.05,
    seed: int = 0,
) -> DrivingScenes:
    """The scenes as a tracker reports them: every real agent's state with independent Gaussian errors.

    Positions get ``N(0, position_noise²)`` metres per axis, speeds ``N(0, speed_noise²)`` m/s (clipped at 0),
    headings ``N(0, heading_noise²)`` radians. Everything else (the ego, the road, the mask and the
    ground-truth ``importance``) is kept, so a model fed the perceived scene is scored against the true labels.
    """
    for name, value in (("position_noise", position_noise), ("speed_noise", speed_noise),
                        ("heading_noise", heading_noise)):  # fmt: skip
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    generator = torch.Generator().manual_seed(seed)
    mask = scenes.mask.to(scenes.positions.dtype)

    def noise(shape: tuple[int, ...], scale: float) -> Tensor:
        return scale * torch.randn(shape, generator=generator, dtype=scenes.positions.dtype)

    shape = tuple(scenes.mask.shape)
    return dataclasses.replace(
        scenes,
        positions=scenes.positions + noise((*shape, 2), position_noise) * mask[..., None],
        speeds=(scenes.speeds + noise(shape, speed_noise) * mask).clamp_min(0.0),
        headings=scenes.headings + noise(shape, heading_noise) * mask,
    )


def agent_features(scenes: DrivingScenes) -> Tensor:
    """``[S, A, 17]`` engineered features per agent (columns: :data:`AGENT_FEATURE_NAMES`; 0 on padding).

    Distance, offsets and speeds in the ego frame; ``time_to_conflict`` is the time for an agent ahead in the
    ego lane to be reached at the current closing speed, or for an agent outside it to reach the ego corridor
    laterally, capped at 10 s. Two occlusion cues describe the ego corridor at ``t = 0`` only:
    ``corridor_blockers`` counts the other agents inside the ego lane (``|y| < 1.75`` m) that are ahead of the
    ego and behind this agent, and ``blocker_gap`` is the distance from the nearest of them to this agent
    (``/50``, capped at 1; 1 when there is none). They are partial by construction: they miss an agent that
    enters the corridor later (a crossing pedestrian, a cut-in) and say nothing about which obstacle constrains
    the plan more, and on perceived scenes they inherit the tracking noise.
    """
    pos, vel = scenes.positions, scenes.velocities()
    ego_v = scenes.ego_speed[:, None]
    distance = pos.norm(dim=-1)
    lateral = pos[..., 1].abs()
    closing_lat = -torch.sign(pos[..., 1]) * vel[..., 1]
    relative = vel[..., 0] - ego_v
    in_lane = lateral < _LANE / 2
    ahead = pos[..., 0] > 0
    cap = torch.full_like(distance, 10.0)
    ttc_lon = torch.where(in_lane & ahead & (relative < 0), pos[..., 0] / (-relative).clamp_min(1e-3), cap)
    ttc_lat = torch.where(~in_lane & (closing_lat > 0), (lateral - _LANE / 2) / closing_lat.clamp_min(1e-3), cap)
    kinds = torch.nn.functional.one_hot(scenes.kinds, len(KINDS)).to(pos.dtype)
    blocker = scenes.mask & in_lane & ahead  # [S, A]: candidates that stand in the ego lane ahead
    x = pos[..., 0]
    between = blocker[:, None, :] & (x[:, None, :] < x[:, :, None])  # [S, agent, other]: other is in front of it
    between &= ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    gaps = torch.where(between, x[:, :, None] - x[:, None, :], torch.full_like(between, 50.0, dtype=pos.dtype))
    columns = [
        torch.log1p(distance),
        pos[..., 0] / 50,
        lateral / 5,
        scenes.speeds / 10,
        vel[..., 0] / 10,
        closing_lat,
        relative / 10,
        torch.minimum(torch.minimum(ttc_lon, ttc_lat), cap) / 10,
        in_lane.to(pos.dtype),
        ((lateral >= _LANE / 2) & (lateral < _ROAD_HALF_WIDTH)).to(pos.dtype),
        (lateral >= _ROAD_HALF_WIDTH).to(pos.dtype),
        kinds[..., 0],
        kinds[..., 1],
        kinds[..., 2],
        ahead.to(pos.dtype),
        between.sum(-1).to(pos.dtype) * ahead,
        (gaps.amin(-1) / 50).clamp(max=1.0),
    ]
    return torch.stack(columns, -1) * scenes.mask[..., None]


def rasterize_agents(scenes: DrivingScenes, grid: int = 20, cell: float = 3.0) -> Tensor:
    """``[S, A, 4, grid, grid]`` agent-centred top-down rasters (ego-frame axes, ``cell`` metres per pixel).

    Channels: 0 road and crossing street; 1 the ego (its speed / 15) and its planned path over the next 60 m;
    2 the other agents (speed / 10 + 0.5 at their cells); 3 the agent itself, drawn at its constant-velocity
    positions over the next 3 s. Padding agents get all-zero rasters.
    """
    s, a = scenes.mask.shape
    dtype, device = scenes.positions.dtype, scenes.positions.device
    offsets = (torch.arange(grid, dtype=dtype, device=device) - grid / 2 + 0.5) * cell
    centre = scenes.positions  # [S, A, 2]
    gx = centre[..., 0, None, None] + offsets[None, None, None, :]  # [S, A, 1, G] (columns = x)
    gy = centre[..., 1, None, None] + offsets[None, None, :, None]  # [S, A, G, 1] (rows = y)
    road = (gy.abs() < _ROAD_HALF_WIDTH) | ((gx - scenes.crossing_x[:, None, None, None]).abs() < _LANE)
    path = (gy.abs() < _EGO_HALF_WIDTH + cell / 2) & (gx > 0) & (gx < 60)
    raster = torch.zeros(s, a, 4, grid, grid, dtype=dtype, device=device)
    raster[:, :, 0] = road.to(dtype)
    raster[:, :, 1] = path.to(dtype)

    def splat(channel: int, points: Tensor, values: Tensor, keep: Tensor) -> None:
        """Add ``values [S, A, P]`` at world ``points [S, A, P, 2]`` into each agent's raster."""
        pix = torch.floor((points - centre[:, :, None, :]) / cell + grid / 2).long()
        inside = keep & (pix >= 0).all(-1) & (pix < grid).all(-1)
        plane = torch.arange(s * a, device=device).view(s, a, 1) * 4 + channel
        flat = (plane * grid + pix[..., 1]) * grid + pix[..., 0]
        raster.view(-1).index_put_((flat[inside],), values[inside], accumulate=True)

    ego = torch.zeros(s, a, 1, 2, dtype=dtype, device=device)
    splat(
        1,
        ego,
        (scenes.ego_speed / 15)[:, None, None].expand(s, a, 1),
        torch.ones(s, a, 1, dtype=torch.bool, device=device),
    )
    others = centre[:, None, :, :].expand(s, a, a, 2)
    pair_keep = scenes.mask[:, None, :] & scenes.mask[:, :, None] & ~torch.eye(a, dtype=torch.bool, device=device)
    splat(2, others, (scenes.speeds / 10 + 0.5)[:, None, :].expand(s, a, a), pair_keep)
    times = torch.arange(0.0, 3.01, 0.5, dtype=dtype, device=device)
    future = centre[:, :, None, :] + scenes.velocities()[:, :, None, :] * times[None, None, :, None]
    splat(
        3,
        future,
        torch.ones(s, a, times.numel(), dtype=dtype, device=device),
        scenes.mask[:, :, None].expand(s, a, times.numel()),
    )
    raster[:, :, :2] *= scenes.mask[:, :, None, None, None].to(dtype)
    return raster
