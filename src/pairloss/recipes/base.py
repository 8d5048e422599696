"""What several recipes share beyond the protocol: scoring an embedding model on open-set retrieval.

Every recipe is an :class:`~pairloss.recipes.protocol.Experiment` run by
:func:`~pairloss.recipes.protocol.run_experiment` (the shared protocol: validation split, equal-budget tuning,
paired seeds, verdicts with a 95% CI). The pieces below serve the retrieval recipes (``recall-at-k``,
``ce-vs-pairwise``), which score a model the same way while tuning (validation classes) and at the end (test
classes).
"""

from __future__ import annotations

from torch import Tensor, nn

from pairloss.metrics.retrieval import retrieval
from pairloss.training.trainer import embed

__all__ = ["RETRIEVAL_METRICS", "retrieval_scores"]

#: The retrieval metrics the open-set recipes report: Recall@1/2/4/8 and MAP@R.
RETRIEVAL_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


def retrieval_scores(model: nn.Module | None, x: Tensor, y: Tensor, *, batch_size: int = 256) -> dict[str, float]:
    """:data:`RETRIEVAL_METRICS` of ``model``'s embeddings of ``x`` (each item queried against all the others).

    Args:
        model: the embedding model, run without autograd in chunks of ``batch_size``; ``None`` scores the raw
            inputs flattened (the pixel baseline).
        x: the inputs, ``[N, ...]``.
        y: their class labels, ``[N]``.
        batch_size: the embedding chunk size (memory only: the scores do not depend on it).
    """
    features = x.flatten(1) if model is None else embed(model, x, batch_size=batch_size)
    scores = retrieval(features, y, k=(1, 2, 4, 8))
    return {name: float(scores[name]) for name in RETRIEVAL_METRICS}
