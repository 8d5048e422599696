"""pairloss: pairwise losses for metric learning and learning to rank, on a memory-bounded row-block engine.

The four parts of a pairwise loss are public modules (:mod:`pairloss.pairs`, :mod:`pairloss.similarity`,
:mod:`pairloss.weights`, :mod:`pairloss.links`, with :mod:`pairloss.reducers`), and :func:`pair_loss` assembles them
into a loss on the engine. :mod:`pairloss.miners` and :class:`CrossBatchMemory` compose with every pair and triplet
loss as in pytorch-metric-learning; :func:`set_memory_budget` / :func:`memory_budget` bound every blocked
computation; :func:`set_checks` switches the input value checks (on by default) that make a call wait for the
device once.
"""

from pairloss import functional, links, losses, memory, metrics, miners, pairs, reducers, similarity, weights
from pairloss._validation import checks, checks_enabled, set_checks
from pairloss.builder import pair_loss
from pairloss.losses import *  # noqa: F403  (the loss classes are the package's main API)
from pairloss.memory import get_memory_budget, memory_budget, set_memory_budget
from pairloss.similarity import CosineSimilarity, DotProductSimilarity, LpDistance, NegSquaredEuclideanSimilarity

__version__ = "0.1.0"

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "NegSquaredEuclideanSimilarity",
    "__version__",
    "checks",
    "checks_enabled",
    "functional",
    "get_memory_budget",
    "links",
    "losses",
    "memory",
    "memory_budget",
    "metrics",
    "miners",
    "pair_loss",
    "pairs",
    "reducers",
    "set_checks",
    "set_memory_budget",
    "similarity",
    "weights",
]
__all__ += losses.__all__
