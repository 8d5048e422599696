"""Which pairs? The first of the four parts of a pairwise loss.

A *pair selector* says, for a block of ``b`` anchors against ``M`` references, which pairs are positive (should be
close, or ranked above) and which negative. The row-block engine asks the selector of a loss for each block, so no
selector ever builds the ``N × M`` masks of the whole batch.

* :class:`LabelPairs` (the default of every embedding loss): same label → positive, different label → negative.
  Labels are class ids ``[N]`` or multi-hot ``[N, C]`` (positive when two samples share a label). A sample is never
  paired with itself.
* :class:`ViewPairs`: the batch is ``k`` views of ``n`` objects stacked view after view (``[view 1; view 2; ...]``,
  SimCLR's layout); the views of one object are positives, everything else negatives. No labels needed.
* :class:`MinedPairs`: exactly the pairs or triplets of a miner's ``indices_tuple`` (pytorch-metric-learning's
  ``(anchors, positives, negatives)`` or ``(anchors1, positives, anchors2, negatives)``), repeated entries counted
  as often as they appear, as PML does.
* :class:`RelevancePairs`: inside one list of scored items, ``(i, j)`` with ``y_i > y_j`` (learning to rank,
  multi-label ranking where ``y`` is the 0/1 label vector), or relevant vs irrelevant by a threshold (BPR, WARP).
* :class:`NeighbourPairs`: each pixel with its neighbours at a dilation (BoxSnake's and BoxInst's local pairs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BlockPairs",
    "LabelPairs",
    "MinedPairs",
    "NeighbourPairs",
    "PairSelector",
    "RelevancePairs",
    "ViewPairs",
    "check_indices_tuple",
    "label_masks",
    "reject_positional_reference",
    "same_label",
]


def same_label(query_labels: Tensor, reference_labels: Tensor) -> Tensor:
    """Boolean ``[b, M]``: ``True`` where query ``i`` and reference ``j`` share a label."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == reference_labels[None, :]
    shared = query_labels.to(torch.float32) @ reference_labels.to(torch.float32).T
    return shared > 0


def label_masks(
    query_labels: Tensor,
    reference_labels: Tensor,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks ``[b, M]`` for a block of queries against all references.

    Args:
        query_labels: labels of the block's queries, ``[b]`` or ``[b, C]``.
        reference_labels: labels of the references, ``[M]`` or ``[M, C]``.
        rows: when the references are the queries themselves, the column of each query row (``[b]``); the pair
            ``(i, rows[i])`` (a sample with itself) is then excluded from both masks.

    Returns:
        ``(positive, negative)``, two boolean ``[b, M]`` tensors.
    """
    positive = same_label(query_labels, reference_labels)
    negative = ~positive
    if rows is not None:
        anchors = torch.arange(rows.numel(), device=rows.device)
        positive[anchors, rows] = False
        negative[anchors, rows] = False  # a multi-hot sample without labels shares none with itself
    return positive, negative


@dataclass(frozen=True)
class BlockPairs:
    """The pairs of one block of ``b`` anchors against ``M`` references.

    Attributes:
        positive, negative: ``[b, M]`` bool masks.
        positive_count, negative_count: how often each pair was selected (``[b, M]`` float) when a pair can be
            selected more than once (mined indices); ``None`` when every selected pair counts once.
        triplets: ``(anchor row in the block, positive column, negative column)`` when the selection is a list of
            triplets (a triplet miner's output); ``None`` otherwise.
    """

    positive: Tensor
    negative: Tensor
    positive_count: Tensor | None = None
    negative_count: Tensor | None = None
    triplets: tuple[Tensor, Tensor, Tensor] | None = None


class PairSelector(ABC):
    """Chooses the positive and negative pairs of each block of anchors (see the module notes).

    ``symmetric`` is true when the selection of ``(i, j)`` and ``(j, i)`` is the same for a batch compared with
    itself, so that the engine may score each unordered pair once.
    """

    symmetric: bool = False
    needs_labels: bool = True

    @abstractmethod
    def block(
        self,
        query_labels: Tensor,
        reference_labels: Tensor,
        rows: Tensor,
        column_offset: int,
        self_offset: int | None,
        upper_triangle: bool,
    ) -> BlockPairs:
        """The pairs of the anchors ``rows`` (global indices) against the references from ``column_offset`` on.

        ``self_offset`` is the column of query 0 when the references contain the queries (``None`` otherwise);
        ``upper_triangle`` asks for the pairs ``j > i`` only (the engine's symmetric mode).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _self_and_triangle(
    positive: Tensor,
    negative: Tensor,
    rows: Tensor,
    column_offset: int,
    self_offset: int | None,
    upper: bool,
    negative_excludes_self: bool = False,
) -> None:
    """Remove the self-pairs (and, in the symmetric mode, the pairs ``j <= i``) from both masks, in place
    (``negative_excludes_self``: the negative mask already leaves them out)."""
    b = rows.numel()
    if upper:
        keep = torch.ones(b, b, dtype=torch.bool, device=positive.device).triu_(1)
        positive[:, :b] &= keep
        negative[:, :b] &= keep
    elif self_offset is not None:
        anchors = torch.arange(b, device=rows.device)
        shift = self_offset - column_offset
        columns = rows + shift if shift else rows
        positive[anchors, columns] = False
        if not negative_excludes_self:
            negative[anchors, columns] = False


class LabelPairs(PairSelector):
    """Same label → positive, different label → negative; never a sample with itself."""

    symmetric = True

    def block(
        self,
        query_labels: Tensor,
        reference_labels: Tensor,
        rows: Tensor,
        column_offset: int,
        self_offset: int | None,
        upper_triangle: bool,
    ) -> BlockPairs:
        positive = same_label(query_labels, reference_labels)
        negative = ~positive
        # a class id always equals itself, so the self-pairs are already off the negative mask
        single = query_labels.ndim == 1
        _self_and_triangle(positive, negative, rows, column_offset, self_offset, upper_triangle, single)
        return BlockPairs(positive, negative)


class ViewPairs(PairSelector):
    """``k`` views of ``n`` objects stacked view after view: sample ``t`` shows object ``t mod n``.

    The views of one object are positives, all other samples negatives (SimCLR's NT-Xent with ``k = 2``). The
    number of objects ``n`` is the batch size divided by ``n_views``.
    """

    symmetric = True
    needs_labels = False

    def __init__(self, n_views: int = 2) -> None:
        if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 2:
            raise ValueError(f"n_views must be an integer >= 2, got {n_views!r}")
        self.n_views = n_views

    def objects(self, n_samples: int, device: torch.device) -> Tensor:
        """The object id of each sample (``arange(n_samples) mod n``); ``ValueError`` if the views do not divide."""
        if n_samples % self.n_views:
            raise ValueError(f"a batch of {n_samples} samples is not {self.n_views} views of the same objects")
        return torch.arange(n_samples, device=device) % (n_samples // self.n_views)

    def block(
        self,
        query_labels: Tensor,
        reference_labels: Tensor,
        rows: Tensor,
        column_offset: int,
        self_offset: int | None,
        upper_triangle: bool,
    ) -> BlockPairs:
        return LabelPairs().block(query_labels, reference_labels, rows, column_offset, self_offset, upper_triangle)

    def __repr__(self) -> str:
        return f"ViewPairs(n_views={self.n_views})"


IndicesTuple = tuple[Tensor, ...]


def reject_positional_reference(indices_tuple: object) -> None:
    """``ValueError`` when a tensor sits where PML's call has the ``indices_tuple``: a reference set passed
    positionally (``loss(x, y, ref_emb, ref_labels)``) belongs in ``ref_emb=, ref_labels=``."""
    if isinstance(indices_tuple, Tensor):
        raise ValueError(
            "indices_tuple (the third argument, as in pytorch-metric-learning) must be a tuple of index tensors, got a "
            "tensor; pass a reference set as ref_emb=..., ref_labels=..."
        )


def check_indices_tuple(indices_tuple: object, n_queries: int, n_references: int) -> IndicesTuple:
    """Validate a miner's output: 3 (triplets) or 4 (pairs) 1-D integer tensors of matching lengths, anchors below
    ``n_queries`` and the others below ``n_references``. Raises ``ValueError`` naming what is wrong."""
    reject_positional_reference(indices_tuple)
    if not isinstance(indices_tuple, tuple | list) or len(indices_tuple) not in (3, 4):
        raise ValueError(
            "indices_tuple must be a tuple of 3 tensors (anchors, positives, negatives) or 4 tensors "
            f"(anchors1, positives, anchors2, negatives), got {type(indices_tuple).__name__}"
            + (f" of length {len(indices_tuple)}" if isinstance(indices_tuple, tuple | list) else "")
        )
    names = ("anchors", "positives", "negatives") if len(indices_tuple) == 3 else ("a1", "p", "a2", "n")
    for name, index in zip(names, indices_tuple, strict=True):
        if not isinstance(index, Tensor) or index.ndim != 1:
            raise ValueError(f"indices_tuple[{names.index(name)}] ({name}) must be a 1-D tensor")
        if index.numel() and (index.is_floating_point() or index.dtype == torch.bool or index.is_complex()):
            raise ValueError(
                f"indices_tuple[{names.index(name)}] ({name}) must hold integer indices, got {index.dtype}"
            )
    lengths = [int(t.numel()) for t in indices_tuple]
    groups = [lengths] if len(lengths) == 3 else [lengths[:2], lengths[2:]]
    if any(len(set(group)) != 1 for group in groups):
        raise ValueError(f"indices_tuple: the index tensors that go together must have equal lengths, got {lengths}")
    for position, (name, index) in enumerate(zip(names, indices_tuple, strict=True)):
        limit = n_queries if name in ("anchors", "a1", "a2") else n_references
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= limit):
            raise ValueError(f"indices_tuple[{position}] ({name}) must lie in [0, {limit}), got values outside it")
    return tuple(index.long() for index in indices_tuple)


class _ByAnchor:
    """Index lists sorted by anchor, so that a block of anchors finds its entries by two binary searches."""

    def __init__(self, anchors: Tensor, *others: Tensor) -> None:
        order = torch.argsort(anchors, stable=True)
        self.anchors = anchors[order]
        self.others = tuple(other[order] for other in others)

    def __len__(self) -> int:
        return int(self.anchors.numel())

    def span(self, start: int, stop: int) -> tuple[Tensor, ...]:
        """``(anchor − start, *others)`` of the entries whose anchor lies in ``[start, stop)``."""
        bounds = torch.searchsorted(self.anchors, torch.tensor([start, stop], device=self.anchors.device))
        first, last = int(bounds[0]), int(bounds[1])
        return (self.anchors[first:last] - start, *(other[first:last] for other in self.others))


class MinedPairs(PairSelector):
    """The pairs (or triplets) of a miner's ``indices_tuple``, each counted as often as it appears.

    ``(a1, p, a2, n)`` gives the positive pairs ``(a1[k], p[k])`` and the negative pairs ``(a2[k], n[k])``;
    ``(a, p, n)`` gives the triplets, and as pairs ``(a, p)`` and ``(a, n)`` (PML's ``convert_to_pairs``). For a
    triplet loss, pairs become the triplets of every positive and negative pair that share an anchor (PML's
    ``convert_to_triplets``). Indices refer to the query batch (anchors) and to the reference set (the batch itself
    when there is none). The labels are not consulted: a mined pair is positive because the miner says so.
    """

    def __init__(self, indices_tuple: IndicesTuple, n_queries: int, n_references: int) -> None:
        self.indices_tuple = check_indices_tuple(indices_tuple, n_queries, n_references)
        self.pairs: tuple[Tensor, ...] = self.indices_tuple
        if len(self.indices_tuple) == 3:
            a, p, n = self.indices_tuple
            self.pairs = (a, p, a, n)
        self._positive = _ByAnchor(self.pairs[0], self.pairs[1])
        self._negative = _ByAnchor(self.pairs[2], self.pairs[3])
        self._triplets: tuple[Tensor, ...] | None = None
        self._given_triplets = _ByAnchor(*self.indices_tuple) if len(self.indices_tuple) == 3 else None

    @property
    def n_positive(self) -> int:
        """Number of positive pairs, repeats included."""
        return len(self._positive)

    @property
    def n_negative(self) -> int:
        """Number of negative pairs, repeats included."""
        return len(self._negative)

    def block(
        self,
        query_labels: Tensor,
        reference_labels: Tensor,
        rows: Tensor,
        column_offset: int,
        self_offset: int | None,
        upper_triangle: bool,
    ) -> BlockPairs:
        if upper_triangle or column_offset:
            raise ValueError("mined pairs are not symmetric; the engine must not use its symmetric mode for them")
        start, stop = int(rows[0]), int(rows[-1]) + 1
        n_columns = reference_labels.shape[0]
        masks = []
        for pairs in (self._positive, self._negative):
            local, others = pairs.span(start, stop)
            count = torch.zeros(stop - start, n_columns, dtype=torch.float64, device=rows.device)
            count.index_put_((local, others), torch.ones_like(local, dtype=torch.float64), accumulate=True)
            masks.append((count > 0, count if bool((count > 1).any()) else None))
        triplets = None
        if self._given_triplets is not None:
            local, positives, negatives = self._given_triplets.span(start, stop)
            triplets = (local, positives, negatives)
        return BlockPairs(masks[0][0], masks[1][0], masks[0][1], masks[1][1], triplets)

    def triplets(self) -> tuple[Tensor, ...]:
        """The triplets: those given, or every (positive pair, negative pair) with a common anchor."""
        if len(self.indices_tuple) == 3:
            a, p, n = self.indices_tuple
            return a, p, n
        if self._triplets is None:
            a1, p, a2, n = self.pairs
            first, second = torch.nonzero(a1[:, None] == a2[None, :], as_tuple=True)
            self._triplets = (a1[first], p[first], n[second])
        return self._triplets


class RelevancePairs:
    """Pairs of one list of scored items: ``(i, j)`` with ``y_i > y_j``, or, with a ``threshold``, relevant
    ``y_i > t`` against irrelevant ``y_j <= t`` items. Padded items (``valid`` false) are in no pair."""

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold

    def sides(self, relevance: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``(above, below)`` ``[B, L]`` such that ``(i, j)`` is a pair exactly when ``above_i > below_j``: padded
        items are moved out of reach (``−∞`` above, ``+∞`` below)."""
        low = torch.full((), float("-inf"), dtype=relevance.dtype, device=relevance.device)
        high = torch.full((), float("inf"), dtype=relevance.dtype, device=relevance.device)
        if self.threshold is None:
            return torch.where(valid, relevance, low), torch.where(valid, relevance, high)
        relevant = relevance > self.threshold
        one, zero = torch.ones_like(low), torch.zeros_like(low)
        return torch.where(valid & relevant, one, low), torch.where(valid & ~relevant, zero, high)

    def mask(self, relevance: Tensor, valid: Tensor) -> Tensor:
        """``[B, L, L]`` bool: the pairs of each list (one pass over the pairs, from :meth:`sides`)."""
        above, below = self.sides(relevance, valid)
        return above[:, :, None] > below[:, None, :]

    def count(self, relevance: Tensor, valid: Tensor) -> Tensor:
        """The number of pairs of all lists (0-dim, int64), from one sort per list: no ``[B, L, L]`` work.

        Item ``i`` is above ``#{j : below_j < above_i}`` items, found by a binary search in the sorted ``below``.
        """
        above, below = self.sides(relevance, valid)
        ordered = torch.sort(below, dim=-1).values
        return torch.searchsorted(ordered, above.contiguous(), right=False).sum()

    def __repr__(self) -> str:
        return f"RelevancePairs(threshold={self.threshold!r})"


class NeighbourPairs:
    """Each grid cell ``i`` with its ``k² − 1`` neighbours ``j = i + (dy, dx)`` at a dilation (BoxSnake, BoxInst)."""

    def __init__(self, kernel_size: int = 3, dilation: int = 2) -> None:
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd number >= 3, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.kernel_size = kernel_size
        self.dilation = dilation

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """The ``(dy, dx)`` of the neighbours, row by row, without ``(0, 0)``."""
        half = self.kernel_size // 2
        steps = range(-half * self.dilation, half * self.dilation + 1, self.dilation)
        return [(dy, dx) for dy in steps for dx in steps if (dy, dx) != (0, 0)]

    @staticmethod
    def shifted(x: Tensor, dy: int, dx: int) -> tuple[Tensor, Tensor]:
        """Views ``(x_i, x_j)`` of ``[..., H, W]`` over the cells ``i`` whose neighbour ``j = i + (dy, dx)`` is on
        the grid."""
        h, w = x.shape[-2], x.shape[-1]
        rows_i = slice(max(0, -dy), h - max(0, dy))
        cols_i = slice(max(0, -dx), w - max(0, dx))
        rows_j = slice(max(0, dy), h - max(0, -dy))
        cols_j = slice(max(0, dx), w - max(0, -dx))
        return x[..., rows_i, cols_i], x[..., rows_j, cols_j]

    def __repr__(self) -> str:
        return f"NeighbourPairs(kernel_size={self.kernel_size}, dilation={self.dilation})"
