"""Functional forms of every loss: ``pairloss.functional.<name>_loss(inputs..., **hyper_parameters)``."""

from pairloss.losses.calibrated import (
    bce_ranknet_loss,
    jrc_loss,
    rcr_loss,
    sbcr_loss,
    self_boosted_pairwise_loss,
)
from pairloss.losses.crossentropy import cross_entropy_loss, pairwise_cross_entropy_loss
from pairloss.losses.domain import sim_real_pair_loss
from pairloss.losses.hashing import ash_loss, dpsh_loss, dsh_loss, hashnet_loss
from pairloss.losses.metric import (
    circle_loss,
    contrastive_loss,
    generalized_lifted_structure_loss,
    lifted_structure_loss,
    margin_loss,
    multi_similarity_loss,
    npairs_loss,
    ntxent_loss,
    supcon_loss,
    triplet_margin_loss,
)
from pairloss.losses.multilabel import multilabel_pairwise_loss, multilabel_univariate_loss
from pairloss.losses.multiview import average_of_rest_infonce_loss, m3g_loss, pairwise_infonce_loss
from pairloss.losses.polygon import boxsnake_loss, level_set_loss, local_pairwise_loss, polygon_box_loss
from pairloss.losses.proxy import (
    arcface_loss,
    cosface_loss,
    normalized_softmax_loss,
    proxy_anchor_loss,
    proxy_nca_loss,
)
from pairloss.losses.ranking import (
    approx_ndcg_loss,
    calibrated_softmax_loss,
    lambda_loss,
    lambdarank_loss,
    list_ce_loss,
    listmle_loss,
    listnet_loss,
    neural_ndcg_loss,
    pairwise_hinge_loss,
    pairwise_soft_zero_one_loss,
    ranknet_loss,
)
from pairloss.losses.recall import recall_at_k_surrogate_loss, simix, smooth_ap_loss
from pairloss.losses.topn import awtr_loss, bpr_loss, warp_loss

__all__ = [
    "approx_ndcg_loss",
    "arcface_loss",
    "ash_loss",
    "average_of_rest_infonce_loss",
    "awtr_loss",
    "bce_ranknet_loss",
    "boxsnake_loss",
    "bpr_loss",
    "calibrated_softmax_loss",
    "circle_loss",
    "contrastive_loss",
    "cosface_loss",
    "cross_entropy_loss",
    "dpsh_loss",
    "dsh_loss",
    "generalized_lifted_structure_loss",
    "hashnet_loss",
    "jrc_loss",
    "lambda_loss",
    "lambdarank_loss",
    "level_set_loss",
    "lifted_structure_loss",
    "list_ce_loss",
    "listmle_loss",
    "listnet_loss",
    "local_pairwise_loss",
    "m3g_loss",
    "margin_loss",
    "multi_similarity_loss",
    "multilabel_pairwise_loss",
    "multilabel_univariate_loss",
    "neural_ndcg_loss",
    "normalized_softmax_loss",
    "npairs_loss",
    "ntxent_loss",
    "pairwise_cross_entropy_loss",
    "pairwise_hinge_loss",
    "pairwise_infonce_loss",
    "pairwise_soft_zero_one_loss",
    "polygon_box_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "ranknet_loss",
    "rcr_loss",
    "recall_at_k_surrogate_loss",
    "sbcr_loss",
    "self_boosted_pairwise_loss",
    "sim_real_pair_loss",
    "simix",
    "smooth_ap_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "warp_loss",
]
