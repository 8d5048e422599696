"""Every loss of the library, as ``nn.Module`` classes (the functional forms live in :mod:`pairloss.functional`).

Importing this package registers the public losses in :data:`pairloss.modules.LOSSES` (read by ``pairloss list``);
defining a loss class registers nothing.
"""

from pairloss.losses.base import LOSSES, EmbeddingLoss, PairLoss, registered_losses
from pairloss.losses.calibrated import (
    BCERankNetLoss,
    JRCLoss,
    PiecewiseLinearCalibrator,
    RCRLoss,
    SBCRLoss,
    SelfBoostedPairwiseLoss,
)
from pairloss.losses.cross_batch import CrossBatchMemory
from pairloss.losses.crossentropy import CrossEntropyLoss, PairwiseCrossEntropyLoss
from pairloss.losses.domain import SimRealPairLoss
from pairloss.losses.hashing import ASHLoss, DPSHLoss, DSHLoss, HashNetLoss
from pairloss.losses.metric import (
    CircleLoss,
    ContrastiveLoss,
    GeneralizedLiftedStructureLoss,
    LiftedStructureLoss,
    MarginLoss,
    MultiSimilarityLoss,
    NPairsLoss,
    NTXentLoss,
    SupConLoss,
    TripletMarginLoss,
)
from pairloss.losses.multilabel import MultiLabelPairwiseLoss, MultiLabelUnivariateLoss
from pairloss.losses.multiview import AverageOfRestInfoNCELoss, M3GLoss, PairwiseInfoNCELoss
from pairloss.losses.polygon import BoxSnakeLoss, LevelSetLoss, LocalPairwiseLoss, PolygonBoxLoss
from pairloss.losses.proxy import (
    ArcFaceLoss,
    CosFaceLoss,
    NormalizedSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
)
from pairloss.losses.ranking import (
    ApproxNDCGLoss,
    CalibratedSoftmaxLoss,
    LambdaLoss,
    LambdaRankLoss,
    ListCELoss,
    ListMLELoss,
    ListNetLoss,
    NeuralNDCGLoss,
    PairwiseHingeLoss,
    PairwiseSoftZeroOneLoss,
    RankNetLoss,
)
from pairloss.losses.recall import RecallAtKSurrogateLoss, SmoothAPLoss
from pairloss.losses.topn import AWTRLoss, BPRLoss, WARPLoss

__all__ = [
    "ASHLoss",
    "AWTRLoss",
    "ApproxNDCGLoss",
    "ArcFaceLoss",
    "AverageOfRestInfoNCELoss",
    "BCERankNetLoss",
    "BPRLoss",
    "BoxSnakeLoss",
    "CalibratedSoftmaxLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "CrossEntropyLoss",
    "DPSHLoss",
    "DSHLoss",
    "EmbeddingLoss",
    "GeneralizedLiftedStructureLoss",
    "HashNetLoss",
    "JRCLoss",
    "LambdaLoss",
    "LambdaRankLoss",
    "LevelSetLoss",
    "LiftedStructureLoss",
    "ListCELoss",
    "ListMLELoss",
    "ListNetLoss",
    "LocalPairwiseLoss",
    "M3GLoss",
    "MarginLoss",
    "MultiLabelPairwiseLoss",
    "MultiLabelUnivariateLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NeuralNDCGLoss",
    "NormalizedSoftmaxLoss",
    "PairLoss",
    "PairwiseCrossEntropyLoss",
    "PairwiseHingeLoss",
    "PairwiseInfoNCELoss",
    "PairwiseSoftZeroOneLoss",
    "PiecewiseLinearCalibrator",
    "PolygonBoxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RCRLoss",
    "RankNetLoss",
    "RecallAtKSurrogateLoss",
    "SBCRLoss",
    "SelfBoostedPairwiseLoss",
    "SimRealPairLoss",
    "SmoothAPLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "WARPLoss",
    "registered_losses",
]

LOSSES.register(
    *(globals()[name] for name in __all__ if name.endswith("Loss") and name not in ("EmbeddingLoss", "PairLoss"))
)
