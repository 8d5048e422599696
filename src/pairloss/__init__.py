"""pairloss: pairwise losses for metric learning and learning to rank, on a memory-bounded row-block engine."""

from pairloss import functional, losses, metrics, similarity
from pairloss.losses import *  # noqa: F403  (the loss classes are the package's main API)
from pairloss.similarity import CosineSimilarity, DotProductSimilarity, LpDistance, NegSquaredEuclideanSimilarity

__version__ = "0.1.0"

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "NegSquaredEuclideanSimilarity",
    "__version__",
    "functional",
    "losses",
    "metrics",
    "similarity",
]
__all__ += losses.__all__
