"""Small backbones used by the recipes and the demo."""

from pairloss.models.agents import AgentScorer
from pairloss.models.backbones import EmbeddingHead, SmallCNN, build_backbone, load_weights
from pairloss.models.cnn import GlyphCNN
from pairloss.models.hashing import HashHead, HashingCNN, SpatialAttention
from pairloss.models.mlp import MLPEmbedder
from pairloss.models.polygon import PolygonHead

__all__ = [
    "AgentScorer",
    "EmbeddingHead",
    "GlyphCNN",
    "HashHead",
    "HashingCNN",
    "MLPEmbedder",
    "PolygonHead",
    "SmallCNN",
    "SpatialAttention",
    "build_backbone",
    "load_weights",
]
