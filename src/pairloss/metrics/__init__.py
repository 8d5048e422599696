"""Evaluation metrics: retrieval (faiss), ranking, top-N, calibration, multi-label and Hamming-ranking metrics."""

from pairloss.metrics.calibration import (
    ReliabilityCurve,
    ece,
    log_loss,
    pcoc,
    reliability_curve,
    reliability_diagram,
)
from pairloss.metrics.hashing import (
    HammingRanking,
    hamming_map,
    hamming_ranking,
    pack_codes,
    precision_recall_curve,
    precision_within_radius,
)
from pairloss.metrics.multilabel import (
    coverage,
    hamming_loss,
    label_ranking_average_precision,
    macro_f1,
    micro_f1,
    multilabel_report,
    one_error,
    ranking_loss,
)
from pairloss.metrics.ranking import auc, gauc, mean_average_precision, mrr, ndcg_at_k
from pairloss.metrics.retrieval import retrieval, retrieval_per_query
from pairloss.metrics.topn import kendall_tau, precision_at_n, recall_at_n, top_n_hits

__all__ = [
    "HammingRanking",
    "ReliabilityCurve",
    "auc",
    "coverage",
    "ece",
    "gauc",
    "hamming_loss",
    "hamming_map",
    "hamming_ranking",
    "kendall_tau",
    "label_ranking_average_precision",
    "log_loss",
    "macro_f1",
    "mean_average_precision",
    "micro_f1",
    "mrr",
    "multilabel_report",
    "ndcg_at_k",
    "one_error",
    "pack_codes",
    "pcoc",
    "precision_at_n",
    "precision_recall_curve",
    "precision_within_radius",
    "ranking_loss",
    "recall_at_n",
    "reliability_curve",
    "reliability_diagram",
    "retrieval",
    "retrieval_per_query",
    "top_n_hits",
]
