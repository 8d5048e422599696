"""A small convolutional visuomotor policy: a depth image → an embedding → scores of discrete actions.

Used by the sim-to-real recipe (Viereck, Saenko, Platt, 2018): the pairwise loss acts on the embedding, the
action head on top of it is trained on simulated labels. No batch normalisation, so that the batch statistics of
one domain never leak into the other.
"""

from __future__ import annotations

from torch import Tensor, nn

from pairloss._validation import check_floating

__all__ = ["DepthPolicy"]


class DepthPolicy(nn.Module):
    """``[N, 1, S, S]`` depth images → action scores ``[N, A]`` through an embedding ``[N, D]``.

    Two strided convolutions (5×5 stride 2, then 3×3 stride 2, ReLU), a hidden linear layer, a linear embedding
    (:meth:`embed`), and a linear action head. The flattened convolutional features keep the image layout, so
    positions (where the peg is relative to the hole) stay readable.
    """

    def __init__(
        self, image_size: int = 32, num_actions: int = 5, embedding_size: int = 32, width: int = 16, hidden: int = 128
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        side = (((image_size + 1) // 2) + 1) // 2
        self.image_size = image_size
        self.embedder = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embedding_size),
        )
        self.head = nn.Linear(embedding_size, num_actions)

    def embed(self, images: Tensor) -> Tensor:
        """The embedding ``[N, D]`` the pairwise loss compares."""
        check_floating(images, "images", ndim=4)
        if images.shape[1:] != (1, self.image_size, self.image_size):
            raise ValueError(
                f"images must have shape [N, 1, {self.image_size}, {self.image_size}], got {tuple(images.shape)}"
            )
        embedded: Tensor = self.embedder(images)
        return embedded

    def forward(self, images: Tensor) -> Tensor:
        scores: Tensor = self.head(self.embed(images))
        return scores
