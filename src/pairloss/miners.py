"""Miners: pick the informative pairs or triplets of a batch, in pytorch-metric-learning's ``indices_tuple`` form.

A miner is called like PML's, ``miner(embeddings, labels, ref_emb=None, ref_labels=None)``, without autograd, and
returns either triplets ``(anchors, positives, negatives)`` or pairs ``(anchors1, positives, anchors2,
negatives)``, index tensors into the batch (anchors) and into the reference set (the batch itself by default).
Every pair and triplet loss of the library takes that tuple as its third argument,
``loss(embeddings, labels, indices_tuple)``, and so do PML's losses: the two libraries' miners and losses mix.

Names, arguments, defaults and the order of the returned indices are PML's. Unlike PML, a miner never builds the
``N × M`` score matrix (nor the ``N × M × M`` triplet mask): it scores one block of anchors at a time under the
memory budget (:mod:`pairloss.memory`), so only its output grows with the number of pairs it returns.

==========================  =========  ===========================================================================
miner                       returns    selects
==========================  =========  ===========================================================================
:class:`MultiSimilarityMiner`  pairs   positives less similar than the anchor's most similar negative + ε, and
                                       negatives more similar than its least similar positive − ε (Wang et al. 2019)
:class:`BatchHardMiner`     triplets   per anchor its hardest positive and hardest negative (Hermans et al. 2017)
:class:`BatchEasyHardMiner`  pairs     per anchor an easy/hard/semi-hard/all positive and negative (Xuan et al. 2020)
:class:`TripletMarginMiner`  triplets  the triplets within the margin: all, hard, semi-hard or easy ones
:class:`PairMarginMiner`    pairs      positives farther than ``pos_margin``, negatives closer than ``neg_margin``
==========================  =========  ===========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pairloss import memory
from pairloss._validation import check_choice, check_pair_inputs
from pairloss.pairs import label_masks
from pairloss.similarity import BaseSimilarity, CosineSimilarity, LpDistance

__all__ = [
    "BaseMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "all_pairs",
    "all_triplets",
]


@dataclass(frozen=True)
class _Block:
    """One block of anchors ``start:stop``: its scores against all references and its label masks."""

    start: int
    sim: Tensor
    positive: Tensor
    negative: Tensor

    @property
    def anchors(self) -> Tensor:
        return torch.arange(self.start, self.start + self.sim.shape[0], device=self.sim.device)


def _blocks(
    distance: BaseSimilarity | None,
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
    row_bytes_per_column: int,
) -> Iterator[_Block]:
    """Blocks of anchors with their scores (none when ``distance`` is ``None``) and masks, under the memory budget."""
    query = embeddings if distance is None else distance.prepare(embeddings)
    reference = query if ref_emb is None else (ref_emb if distance is None else distance.prepare(ref_emb))
    reference_labels = labels if ref_labels is None else ref_labels
    n, m = query.shape[0], reference.shape[0]
    size = memory.rows_per_block(n, m * row_bytes_per_column, max_temporary=memory.MAX_TEMPORARY_BYTES * 4)
    for start, stop in memory.row_blocks(n, size):
        rows = torch.arange(start, stop, device=query.device) if ref_emb is None else None
        positive, negative = label_masks(labels[start:stop], reference_labels, rows)
        sim = query.new_empty(stop - start, m) if distance is None else distance.pairwise(query[start:stop], reference)
        yield _Block(start, sim, positive, negative)


def _empty(device: torch.device, parts: int) -> tuple[Tensor, ...]:
    return tuple(torch.zeros(0, dtype=torch.long, device=device) for _ in range(parts))


def _concatenate(pieces: Sequence[tuple[Tensor, ...]], parts: int, device: torch.device) -> tuple[Tensor, ...]:
    if not pieces:
        return _empty(device, parts)
    return tuple(torch.cat([piece[k] for piece in pieces]) for k in range(parts))


class BaseMiner(nn.Module, ABC):
    """A miner: ``miner(embeddings, labels, ref_emb=None, ref_labels=None) -> indices_tuple`` (no gradient)."""

    def __init__(self, distance: BaseSimilarity | None = None) -> None:
        super().__init__()
        self.distance = distance if distance is not None else self.default_distance()

    @staticmethod
    def default_distance() -> BaseSimilarity:
        return LpDistance()

    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        with torch.no_grad():
            embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
            return self.mine(embeddings.detach(), labels, None if ref_emb is None else ref_emb.detach(), ref_labels)

    @abstractmethod
    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        """The mined indices (PML's ``indices_tuple`` form) of detached, checked inputs."""

    def _blocks(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None, copies: int = 8
    ) -> Iterator[_Block]:
        return _blocks(self.distance, embeddings, labels, ref_emb, ref_labels, copies * embeddings.element_size())

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}"


def _has_pairs(labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None) -> tuple[bool, bool]:
    """Whether the batch has any positive and any negative pair (from the labels alone, block by block)."""
    has_positive = has_negative = False
    for block in _blocks(None, labels.new_zeros(labels.shape[0], 1).float(), labels, ref_emb, ref_labels, 2):
        has_positive |= bool(block.positive.any())
        has_negative |= bool(block.negative.any())
    return has_positive, has_negative


class MultiSimilarityMiner(BaseMiner):
    """Multi-similarity mining (Wang et al., CVPR 2019), PML's ``MultiSimilarityMiner``; returns pairs.

    With a similarity s (cosine by default), a positive pair ``(i, p)`` is kept when ``s_ip − ε`` is below the
    largest negative similarity of anchor i, a negative pair ``(i, n)`` when ``s_in + ε`` is above the smallest
    positive similarity of i (a distance flips the comparisons). Within an anchor the pairs come in increasing
    order of the score, as in PML.
    """

    def __init__(self, epsilon: float = 0.1, distance: BaseSimilarity | None = None) -> None:
        super().__init__(distance)
        self.epsilon = epsilon

    @staticmethod
    def default_distance() -> BaseSimilarity:
        return CosineSimilarity()

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        if not all(_has_pairs(labels, ref_emb, ref_labels)):
            return _empty(embeddings.device, 4)
        inverted = self.distance.is_inverted
        big = torch.finfo(embeddings.dtype).max
        pos_ignore, neg_ignore = (big, -big) if inverted else (-big, big)
        positives, negatives = [], []
        for block in self._blocks(embeddings, labels, ref_emb, ref_labels):
            by_positive = torch.where(block.positive, block.sim, pos_ignore)
            by_negative = torch.where(block.negative, block.sim, neg_ignore)
            if ref_emb is None:  # PML fills the diagonal of both with the ignore values
                by_positive[block.anchors - block.start, block.anchors] = pos_ignore
                by_negative[block.anchors - block.start, block.anchors] = neg_ignore
            pos_sorted, pos_order = torch.sort(by_positive, dim=1)
            neg_sorted, neg_order = torch.sort(by_negative, dim=1)
            if inverted:
                hard_pos = pos_sorted - self.epsilon < neg_sorted[:, -1:]
                hard_neg = neg_sorted + self.epsilon > pos_sorted[:, :1]
            else:
                hard_pos = pos_sorted + self.epsilon > neg_sorted[:, :1]
                hard_neg = neg_sorted - self.epsilon < pos_sorted[:, -1:]
            hard_pos &= torch.gather(block.positive, 1, pos_order)
            hard_neg &= torch.gather(block.negative, 1, neg_order)
            rows, slots = torch.nonzero(hard_pos, as_tuple=True)
            positives.append((rows + block.start, pos_order[rows, slots]))
            rows, slots = torch.nonzero(hard_neg, as_tuple=True)
            negatives.append((rows + block.start, neg_order[rows, slots]))
        a1, p = _concatenate(positives, 2, embeddings.device)
        a2, n = _concatenate(negatives, 2, embeddings.device)
        return a1, p, a2, n

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, distance={self.distance!r}"


#: Mining strategies of :class:`BatchEasyHardMiner`.
STRATEGIES = ("hard", "semihard", "easy", "all")


class BatchEasyHardMiner(BaseMiner):
    """Per anchor one positive and one negative chosen by strategy (Xuan, Stylianou, Liu, Pless, WACV 2020),
    PML's ``BatchEasyHardMiner``; returns pairs ``(a, p, a, n)``.

    ``pos_strategy`` / ``neg_strategy``: ``"easy"`` (the closest positive, the farthest negative), ``"hard"`` (the
    farthest positive, the closest negative), ``"semihard"`` (the hard one that is still easier than the other side's
    choice) or ``"all"`` (every pair of that kind). ``allowed_pos_range`` / ``allowed_neg_range`` restrict the scores
    that may be chosen. Anchors without a valid choice on both sides are left out.
    """

    def __init__(
        self,
        pos_strategy: str = "easy",
        neg_strategy: str = "semihard",
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance: BaseSimilarity | None = None,
    ) -> None:
        super().__init__(distance)
        check_choice(pos_strategy, "pos_strategy", STRATEGIES)
        check_choice(neg_strategy, "neg_strategy", STRATEGIES)
        if pos_strategy == neg_strategy == "semihard":
            raise ValueError('pos_strategy and neg_strategy cannot both be "semihard"')
        if "all" in (pos_strategy, neg_strategy) and "semihard" in (pos_strategy, neg_strategy):
            raise ValueError('"semihard" cannot be used in combination with "all"')
        self.pos_strategy, self.neg_strategy = pos_strategy, neg_strategy
        self.allowed_pos_range, self.allowed_neg_range = allowed_pos_range, allowed_neg_range

    def _pick(
        self, largest: bool, sim: Tensor, mask: Tensor, allowed: tuple[float, float] | None, beyond: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per row the largest (or smallest) score on ``mask`` within ``allowed``, strictly beyond ``beyond`` (the
        semi-hard threshold: smaller than it when picking the largest, larger otherwise)."""
        keep = mask.clone()
        if beyond is not None:
            keep &= (sim < beyond[:, None]) if largest else (sim > beyond[:, None])
        if allowed is not None:
            keep &= (sim >= allowed[0]) & (sim <= allowed[1])
        fill = float("-inf") if largest else float("inf")
        values, columns = (torch.max if largest else torch.min)(sim.masked_fill(~keep, fill), dim=1)
        return values, columns, keep.any(dim=1)

    def _largest(self, strategy: str, positive: bool) -> bool:
        """Whether the choice is the largest score: a hard positive is the least similar (the largest distance)."""
        hard = strategy in ("hard", "semihard") if positive else strategy == "easy"
        return hard != self.distance.is_inverted

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        pieces = []
        for block in self._blocks(embeddings, labels, ref_emb, ref_labels):
            pieces.append(self._mine_block(block))
        return _concatenate(pieces, 4, embeddings.device)

    def _mine_block(self, block: _Block) -> tuple[Tensor, ...]:
        sim, anchors = block.sim, block.anchors
        pos_all, neg_all = self.pos_strategy == "all", self.neg_strategy == "all"
        chosen: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        order = ("negative", "positive") if self.pos_strategy == "semihard" else ("positive", "negative")
        for kind in order:
            positive = kind == "positive"
            strategy = self.pos_strategy if positive else self.neg_strategy
            if strategy == "all":
                continue
            other = "negative" if positive else "positive"
            beyond = chosen[other][0] if strategy == "semihard" else None
            chosen[kind] = self._pick(
                self._largest(strategy, positive),
                sim,
                block.positive if positive else block.negative,
                self.allowed_pos_range if positive else self.allowed_neg_range,
                beyond,
            )
        if not pos_all and not neg_all:
            keep = chosen["positive"][2] & chosen["negative"][2]
            a = anchors[keep]
            return a, chosen["positive"][1][keep], a, chosen["negative"][1][keep]
        if pos_all and neg_all:
            rows_p, p = torch.nonzero(block.positive, as_tuple=True)
            rows_n, n = torch.nonzero(block.negative, as_tuple=True)
            return rows_p + block.start, p, rows_n + block.start, n
        if pos_all:
            rows_p, p = torch.nonzero(block.positive, as_tuple=True)
            keep = chosen["negative"][2]
            return rows_p + block.start, p, anchors[keep], chosen["negative"][1][keep]
        rows_n, n = torch.nonzero(block.negative, as_tuple=True)
        keep = chosen["positive"][2]
        return anchors[keep], chosen["positive"][1][keep], rows_n + block.start, n

    def extra_repr(self) -> str:
        return f"pos_strategy={self.pos_strategy!r}, neg_strategy={self.neg_strategy!r}, distance={self.distance!r}"


class BatchHardMiner(BatchEasyHardMiner):
    """Batch-hard mining (Hermans, Beyer, Leibe 2017), PML's ``BatchHardMiner``: per anchor the farthest positive
    and the closest negative; returns triplets ``(a, p, n)``."""

    def __init__(
        self,
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance: BaseSimilarity | None = None,
    ) -> None:
        super().__init__("hard", "hard", allowed_pos_range, allowed_neg_range, distance)

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        a, p, _, n = super().mine(embeddings, labels, ref_emb, ref_labels)
        return a, p, n


#: Triplet types of :class:`TripletMarginMiner`.
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def _triplets(
    distance: BaseSimilarity | None,
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
    condition: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, ...]:
    """Every triplet ``(a, p, n)`` (in PML's order: by anchor, then positive, then negative) whose margin
    ``d_an − d_ap`` (``s_ap − s_an`` for a similarity) satisfies ``condition`` (all triplets when ``None``). Each
    block compares its anchors' positives with all references, ``[b, K, M]`` for K positives at a time."""
    pieces: list[tuple[Tensor, ...]] = []
    inverted = distance is not None and distance.is_inverted
    for block in _blocks(distance, embeddings, labels, ref_emb, ref_labels, 4 * embeddings.element_size()):
        if not block.positive.any():
            continue
        rows, columns = block.positive.nonzero(as_tuple=True)
        per_row = block.positive.sum(dim=1)
        slots = torch.arange(rows.numel(), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
        width = int(per_row.max())
        positive_column = torch.full((block.sim.shape[0], width), -1, dtype=torch.long, device=rows.device)
        positive_column[rows, slots] = columns
        chunk = max(1, memory.MAX_TEMPORARY_BYTES // max(1, block.positive.numel()))
        found: list[tuple[Tensor, Tensor, Tensor]] = []
        for first in range(0, width, chunk):
            columns_part = positive_column[:, first : first + chunk]
            valid = (columns_part >= 0)[:, :, None] & block.negative[:, None, :]
            if condition is not None:
                ap = block.sim.gather(1, columns_part.clamp_min(0))[:, :, None]
                an = block.sim[:, None, :]
                valid &= condition(ap - an if inverted else an - ap)
            r, k, n = valid.nonzero(as_tuple=True)
            found.append((r, columns_part[r, k], n))
        r, p, n = (torch.cat(part) for part in zip(*found, strict=True))
        if len(found) > 1:  # chunks of positives come slot by slot: restore the (anchor, positive, negative) order
            m = block.sim.shape[1]
            order = torch.argsort((r * m + p) * m + n)
            r, p, n = r[order], p[order], n[order]
        pieces.append((r + block.start, p, n))
    return _concatenate(pieces, 3, embeddings.device)


def all_pairs(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, ...]:
    """Every positive and negative pair ``(a1, p, a2, n)`` of a batch (PML's ``get_all_pairs_indices``, same order;
    without ``ref_labels`` the batch against itself, self-pairs left out)."""
    placeholder = torch.zeros(labels.shape[0], 1, device=labels.device)
    reference = None if ref_labels is None else torch.zeros(ref_labels.shape[0], 1, device=labels.device)
    pieces = []
    for block in _blocks(None, placeholder, labels, reference, ref_labels, 2):
        rows_p, p = torch.nonzero(block.positive, as_tuple=True)
        rows_n, n = torch.nonzero(block.negative, as_tuple=True)
        pieces.append((rows_p + block.start, p, rows_n + block.start, n))
    return _concatenate(pieces, 4, labels.device)


def all_triplets(
    labels: Tensor, ref_labels: Tensor | None = None, device: torch.device | None = None
) -> tuple[Tensor, ...]:
    """Every triplet ``(anchor, positive, negative)`` of a batch (PML's ``get_all_triplets_indices``, same order)."""
    placeholder = torch.zeros(labels.shape[0], 1, device=device or labels.device)
    reference = None if ref_labels is None else torch.zeros(ref_labels.shape[0], 1, device=placeholder.device)
    return _triplets(None, placeholder, labels, reference, ref_labels, None)


class TripletMarginMiner(BaseMiner):
    """Triplets within the margin, PML's ``TripletMarginMiner``; returns ``(a, p, n)``.

    With the triplet margin ``t = d_an − d_ap`` (``s_ap − s_an`` for a similarity), ``type_of_triplets``:
    ``"all"``: ``t ≤ margin``; ``"hard"``: ``t ≤ 0``; ``"semihard"``: ``0 < t ≤ margin``; ``"easy"``: ``t > margin``.
    """

    def __init__(
        self, margin: float = 0.2, type_of_triplets: str = "all", distance: BaseSimilarity | None = None
    ) -> None:
        super().__init__(distance)
        self.margin = margin
        self.type_of_triplets = check_choice(type_of_triplets, "type_of_triplets", TRIPLET_TYPES)

    def condition(self, t: Tensor) -> Tensor:
        """Which triplet margins ``t`` the miner keeps."""
        if self.type_of_triplets == "easy":
            return t > self.margin
        keep = t <= self.margin
        if self.type_of_triplets == "hard":
            keep &= t <= 0
        elif self.type_of_triplets == "semihard":
            keep &= t > 0
        return keep

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        return _triplets(self.distance, embeddings, labels, ref_emb, ref_labels, self.condition)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, type_of_triplets={self.type_of_triplets!r}, distance={self.distance!r}"


class PairMarginMiner(BaseMiner):
    """Pairs that violate a margin, PML's ``PairMarginMiner``; returns pairs: positive pairs farther than
    ``pos_margin`` and negative pairs closer than ``neg_margin`` (a similarity flips both comparisons)."""

    def __init__(
        self, pos_margin: float = 0.2, neg_margin: float = 0.8, distance: BaseSimilarity | None = None
    ) -> None:
        super().__init__(distance)
        self.pos_margin, self.neg_margin = pos_margin, neg_margin

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        inverted = self.distance.is_inverted
        pieces = []
        for block in self._blocks(embeddings, labels, ref_emb, ref_labels):
            hard_pos = (block.sim < self.pos_margin) if inverted else (block.sim > self.pos_margin)
            hard_neg = (block.sim > self.neg_margin) if inverted else (block.sim < self.neg_margin)
            rows_p, p = torch.nonzero(hard_pos & block.positive, as_tuple=True)
            rows_n, n = torch.nonzero(hard_neg & block.negative, as_tuple=True)
            pieces.append((rows_p + block.start, p, rows_n + block.start, n))
        return _concatenate(pieces, 4, embeddings.device)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, distance={self.distance!r}"
