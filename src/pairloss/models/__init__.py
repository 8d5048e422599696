"""Small backbones used by the recipes and the demo."""

from pairloss.models.agents import AgentScorer
from pairloss.models.backbones import EmbeddingHead, SmallCNN, build_backbone, load_weights
from pairloss.models.cnn import GlyphCNN
from pairloss.models.hashing import AttentionHashingNet, HashHead, HashingCNN, SalientFeatures, SpatialAttention
from pairloss.models.mlp import MLPEmbedder
from pairloss.models.polygon import PolygonHead

__all__ = [
    "AgentScorer",
    "AttentionHashingNet",
    "EmbeddingHead",
    "GlyphCNN",
    "HashHead",
    "HashingCNN",
    "MLPEmbedder",
    "PolygonHead",
    "SalientFeatures",
    "SmallCNN",
    "SpatialAttention",
    "build_backbone",
    "load_weights",
]
