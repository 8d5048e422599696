"""A context-aware list scorer for learning to rank (the allRank model of Pobrotyn et al., used by NeuralNDCG).

Each document's features go through a linear layer to ``d_model``, a Transformer encoder lets the documents of a
list attend to each other (padding masked out; no positional encoding, so the scores do not depend on the order
the documents are listed in), and a linear layer with ``tanh`` gives one score per document. ``num_layers=0`` is the
pointwise MLP scorer (each document scored alone).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ListTransformerRanker"]


class ListTransformerRanker(nn.Module):
    """``(features [L, S, F], valid [L, S]) -> scores [L, S]``; padded positions get score 0.

    Defaults are the NeuralNDCG paper's (allRank's reproducibility configuration): ``d_model = 96``, two encoder
    layers with one head, feed-forward width 384, dropout 0.1, ``tanh`` output.
    """

    def __init__(
        self,
        in_features: int,
        d_model: int = 96,
        num_layers: int = 2,
        num_heads: int = 1,
        d_ff: int = 384,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(in_features, d_model)
        self.encoder = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, batch_first=True, norm_first=True),
                num_layers,
                enable_nested_tensor=False,
            )
            if num_layers > 0
            else None
        )
        self.output = nn.Linear(d_model, 1)

    def forward(self, features: Tensor, valid: Tensor) -> Tensor:
        if features.ndim != 3 or valid.shape != features.shape[:2]:
            raise ValueError(f"expected features [L, S, F] and valid [L, S], got {features.shape} / {valid.shape}")
        hidden = self.input(features)
        if self.encoder is not None:
            # lists with no valid entry would make attention NaN: let such rows attend to everything
            padding = ~valid & valid.any(dim=1, keepdim=True)
            hidden = self.encoder(hidden, src_key_padding_mask=padding)
        scores = torch.tanh(self.output(hidden).squeeze(-1))
        return scores.masked_fill(~valid, 0.0)
