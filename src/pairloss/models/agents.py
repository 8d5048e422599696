"""An agent-importance scorer: a small CNN over an agent-centred raster, engineered features, or both.

Refaat et al. (agent prioritisation for autonomous navigation) score each agent of a scene with a network that
combines a learned embedding of a top-down rendering of the scene around the agent with hand-engineered features
(distance, time to collision, relative speed, ...), and train it with a pairwise ranking loss over the agents of a
scene. :class:`AgentScorer` is that model at a small scale; ``mode`` selects the ablation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairloss._validation import check_choice, check_floating

__all__ = ["AgentScorer"]

MODES = ("cnn", "features", "combined")


class AgentScorer(nn.Module):
    """``score = head([CNN(raster), MLP(features)])`` for each agent; ``mode`` drops one branch for the ablation.

    The CNN is three 3×3 convolutions (16, 32, 32 channels, ReLU, two 2×2 max-pools) flattened into a 32-d
    embedding, so that the position of things in the raster is kept; the feature branch is a 2-layer MLP to 32-d;
    the head is ``Linear(·, 64) → ReLU → Linear(64, 1)``.

    Args:
        n_features: engineered features per agent (ignored for ``mode="cnn"``).
        mode: ``"cnn"``, ``"features"`` or ``"combined"``.
        channels: raster channels.
        grid: raster side in pixels (divisible by 4).
    """

    def __init__(self, n_features: int, mode: str = "combined", channels: int = 4, grid: int = 20) -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", MODES)
        if grid % 4:
            raise ValueError(f"grid must be divisible by 4, got {grid}")
        width = 0
        self.cnn: nn.Module | None = None
        self.mlp: nn.Module | None = None
        if mode in ("cnn", "combined"):
            self.cnn = nn.Sequential(
                nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(32 * (grid // 4) ** 2, 32), nn.ReLU(),
            )  # fmt: skip
            width += 32
        if mode in ("features", "combined"):
            self.mlp = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
            width += 32
        self.head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, raster: Tensor, features: Tensor) -> Tensor:
        """``raster [N, C, G, G]`` and ``features [N, F]`` of ``N`` agents → scores ``[N]`` (larger = more urgent)."""
        parts = []
        if self.cnn is not None:
            check_floating(raster, "raster", ndim=4)
            parts.append(self.cnn(raster))
        if self.mlp is not None:
            check_floating(features, "features", ndim=2)
            parts.append(self.mlp(features))
        if len(parts) == 2 and parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"raster has {parts[0].shape[0]} agents but features have {parts[1].shape[0]}")
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.head(joined).squeeze(-1)
