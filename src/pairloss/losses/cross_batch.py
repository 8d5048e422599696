"""Cross-batch memory (Wang, Zhang, Huang, Scott, CVPR 2020): compare each batch with the embeddings of past ones.

A queue keeps the last ``memory_size`` embeddings (detached) and their labels. Each call enqueues the batch, then
computes the wrapped loss with the batch as anchors and the whole queue as references, so that a small batch sees
many more negatives (and positives) than it holds. Call and behaviour are pytorch-metric-learning's
``CrossBatchMemory``: an optional miner mines the pairs between the batch and the queue, a pair of a sample with
its own copy in the queue is left out, and ``enqueue_mask`` splits the batch into samples that are only enqueued
and samples that are only anchors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pairloss._validation import check_embeddings, check_labels
from pairloss.miners import all_pairs
from pairloss.modules import PairLoss

__all__ = ["CrossBatchMemory"]

IndicesTuple = tuple[Tensor, ...]


def _without_self_pairs(indices: IndicesTuple, own_slot: Tensor) -> IndicesTuple:
    """Drop the positive pairs (or triplets) ``(a, p)`` where ``p`` is anchor ``a``'s own slot in the queue."""
    anchors, positives = indices[0], indices[1]
    keep = own_slot[anchors] != positives
    if len(indices) == 3:
        return anchors[keep], positives[keep], indices[2][keep]
    return anchors[keep], positives[keep], indices[2], indices[3]


def _as_form(indices: IndicesTuple, form: int) -> IndicesTuple:
    """Pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``, converted as PML does."""
    if len(indices) == form:
        return indices
    if form == 4:
        a, p, n = indices
        return a, p, a, n
    a1, p, a2, n = indices
    first, second = torch.nonzero(a1[:, None] == a2[None, :], as_tuple=True)
    return a1[first], p[first], n[second]


class CrossBatchMemory(PairLoss):
    """Cross-batch memory around a pair or triplet loss, PML's ``CrossBatchMemory``.

    Args:
        loss: a loss taking ``(embeddings, labels, indices_tuple, ref_emb, ref_labels)`` (contrastive,
            multi-similarity, circle, generalized lifted structure, NT-Xent, SupCon, triplet margin, margin, the
            hashing losses, a :func:`pairloss.pair_loss`, or a PML loss).
        embedding_size: the embedding dimension ``D``.
        memory_size: how many past embeddings the queue keeps.
        miner: mines the pairs between the batch and the queue (``miner(emb, labels, ref_emb, ref_labels)``);
            all label pairs when ``None``.

    ``forward(embeddings, labels, indices_tuple=None, enqueue_mask=None)``: ``indices_tuple`` adds pairs within the
    batch's anchors and the queue; ``enqueue_mask`` (bool ``[N]``) enqueues the marked samples and uses the others
    as anchors (then no self-pair can occur). The queue holds the all-pairs index lists of one batch against the
    queue, ``O(N · memory_size)`` indices, as PML does.
    """

    formula = "loss(batch, labels, pairs(batch × queue), queue, queue labels)"
    paper = "Wang, Zhang, Huang, Scott. Cross-batch memory for embedding learning. CVPR 2020"
    family = "metric"

    embedding_memory: Tensor
    label_memory: Tensor

    def __init__(self, loss: nn.Module, embedding_size: int, memory_size: int = 1024, miner: Any = None) -> None:
        super().__init__()
        if embedding_size < 1 or memory_size < 1:
            raise ValueError(f"embedding_size and memory_size must be >= 1, got {embedding_size}, {memory_size}")
        self.loss = loss
        self.miner = miner
        self.embedding_size = embedding_size
        self.memory_size = memory_size
        self.reset_queue()

    def reset_queue(self) -> None:
        """Empty the queue."""
        self.register_buffer("embedding_memory", torch.zeros(self.memory_size, self.embedding_size))
        self.register_buffer("label_memory", torch.zeros(self.memory_size, dtype=torch.long))
        self.has_been_filled = False
        self.queue_idx = 0

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: IndicesTuple | None = None,
        enqueue_mask: Tensor | None = None,
    ) -> Any:
        check_embeddings(embeddings)
        labels = check_labels(labels, embeddings.shape[0], device=embeddings.device)
        if labels.ndim != 1:
            raise ValueError("CrossBatchMemory needs 1-D class ids")
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings have {embeddings.shape[1]} features, the memory {self.embedding_size}")
        if indices_tuple is not None and enqueue_mask is not None:
            raise ValueError("indices_tuple and enqueue_mask are mutually exclusive")
        if enqueue_mask is not None:
            if enqueue_mask.shape != labels.shape or enqueue_mask.dtype != torch.bool:
                raise ValueError(f"enqueue_mask must be a bool tensor of shape {tuple(labels.shape)}")
            queued, queued_labels = embeddings[enqueue_mask], labels[enqueue_mask]
            embeddings, labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
        else:
            if embeddings.shape[0] > self.memory_size:
                raise ValueError(f"a batch of {embeddings.shape[0]} does not fit a memory of {self.memory_size}")
            queued, queued_labels = embeddings, labels
        self.embedding_memory = self.embedding_memory.to(device=embeddings.device, dtype=embeddings.dtype)
        self.label_memory = self.label_memory.to(device=labels.device)
        slots = self._enqueue(queued, queued_labels)
        filled = self.memory_size if self.has_been_filled else self.queue_idx
        memory, memory_labels = self.embedding_memory[:filled], self.label_memory[:filled]

        if self.miner is not None:
            mined = tuple(self.miner(embeddings, labels, memory, memory_labels))
        else:
            mined = all_pairs(labels, memory_labels)
        if enqueue_mask is None:
            mined = _without_self_pairs(mined, slots)
        if indices_tuple is not None:
            given = _as_form(tuple(indices_tuple), len(mined))
            mined = tuple(torch.cat([a, b]) for a, b in zip(mined, given, strict=True))
        return self.loss(embeddings, labels, mined, memory, memory_labels)

    def _enqueue(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Write the batch into the queue (detached); return each sample's slot."""
        slots = torch.arange(self.queue_idx, self.queue_idx + embeddings.shape[0], device=labels.device)
        slots = slots % self.memory_size
        self.embedding_memory[slots] = embeddings.detach()
        self.label_memory[slots] = labels.detach()
        previous = self.queue_idx
        self.queue_idx = (self.queue_idx + embeddings.shape[0]) % self.memory_size
        if not self.has_been_filled and self.queue_idx <= previous:
            self.has_been_filled = True
        return slots

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, memory_size={self.memory_size}, miner={self.miner!r}"
