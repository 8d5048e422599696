"""A simulated CTR system with known click probabilities: requests, candidates, clicks and dumped serving scores.

Each request has a user, a context and tens to hundreds of candidate items (20–200 by default, as in a ranking
stage). The true click logit of candidate ``i`` in request ``q`` (user ``u``, context ``c``) is

    z_qi = β + b_q + γ ⟨U_u, V_i⟩ + π_i + ⟨w, c⟩ ⟨c', V_i⟩,
    b_q  = ⟨w_b, c⟩ + ½ Σ_k tanh((M_b c)_k) + σ_b ε_q

with latent user/item vectors ``U``, ``V``, item popularity ``π`` and a request-level bias ``b_q`` that is only
partly predictable from the context (nonlinearly; ``ε_q`` is hidden). Clicks are ``Bernoulli(σ(z))``. A model sees
noisy views of ``U`` and ``V``, the context and the product of the two views, never ``z``.

A serving model's logits can be dumped into a log (:meth:`CTRLog.with_dumped`); :func:`reference_lists` then gives
every impression the dumped scores and clicks of the other candidates of its request (SBCR's input).
:class:`RequestBatches` draws the batches of a training step either fully shuffled or grouped by request, with the
same number of batches per epoch, so that the two are compared at equal optimiser updates.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from pairloss.losses._lists import group_to_lists

__all__ = ["CTRLog", "CTRSimulator", "ReferenceLists", "RequestBatches", "reference_lists"]


@dataclass(frozen=True)
class CTRLog:
    """Impressions, one row each (``n`` rows), with request ids ``0 .. R−1``.

    Attributes:
        user: ``[n, d_u]`` observed user features (the same for all impressions of a request).
        item: ``[n, d_i]`` observed item features.
        context: ``[n, d_c]`` request context features.
        request: ``[n]`` request id (dense, ``0 .. R−1``).
        click: ``[n]`` 0/1 clicks.
        true_prob: ``[n]`` the true click probability (for reference only; never a model input).
        dumped: ``[n]`` logits of the serving model, or ``None`` before they are dumped.
    """

    user: Tensor
    item: Tensor
    context: Tensor
    request: Tensor
    click: Tensor
    true_prob: Tensor
    dumped: Tensor | None = None

    def __len__(self) -> int:
        return int(self.click.shape[0])

    @property
    def n_requests(self) -> int:
        return int(self.request.max()) + 1 if len(self) else 0

    @property
    def features(self) -> Tensor:
        """The model input: ``[user, item, context, user ⊙ item]``."""
        return torch.cat([self.user, self.item, self.context, self.user * self.item], dim=1)

    @property
    def request_features(self) -> Tensor:
        """Request-level features ``[user, context]`` (identical within a request)."""
        return torch.cat([self.user, self.context], dim=1)

    def with_dumped(self, logits: Tensor) -> CTRLog:
        """A copy of the log with the serving model's ``logits`` dumped in."""
        if logits.shape != self.click.shape:
            raise ValueError(f"dumped logits must have shape {tuple(self.click.shape)}, got {tuple(logits.shape)}")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("dumped logits must be finite")
        return replace(self, dumped=logits.detach().to(self.click.dtype))

    def select_requests(self, requests: Tensor) -> CTRLog:
        """The impressions of the given request ids, with the requests renumbered ``0 .. len(requests)−1``."""
        requests = torch.as_tensor(requests, dtype=torch.long)
        if requests.numel() and (int(requests.min()) < 0 or int(requests.max()) >= self.n_requests):
            raise ValueError(f"request ids must be in [0, {self.n_requests}), got {requests.min()}..{requests.max()}")
        code = torch.full((self.n_requests,), -1, dtype=torch.long)
        code[requests] = torch.arange(requests.numel())
        keep = code[self.request] >= 0
        return CTRLog(
            user=self.user[keep],
            item=self.item[keep],
            context=self.context[keep],
            request=code[self.request[keep]],
            click=self.click[keep],
            true_prob=self.true_prob[keep],
            dumped=None if self.dumped is None else self.dumped[keep],
        )

    def split_requests(self, fraction: float, seed: int) -> tuple[CTRLog, CTRLog]:
        """Split by request: ``(the rest, a random ``fraction`` of the requests)`` (e.g. fit and validation)."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        order = torch.randperm(self.n_requests, generator=torch.Generator().manual_seed(seed))
        cut = max(1, round(fraction * self.n_requests))
        return self.select_requests(order[cut:].sort().values), self.select_requests(order[:cut].sort().values)


@dataclass(frozen=True)
class ReferenceLists:
    """The dumped scores and clicks of every request, padded, and where each impression sits in them.

    Attributes:
        scores: ``[R, L]`` dumped logits of each request's candidates (0 at padding).
        clicks: ``[R, L]`` their clicks, ``-1`` at padding.
        row: ``[n]`` the request row of each impression.
        slot: ``[n]`` the impression's own position in its row.
    """

    scores: Tensor
    clicks: Tensor
    row: Tensor
    slot: Tensor

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(ref_scores [b, L], ref_labels [b, L])`` of the impressions ``index``: the other candidates of each
        impression's request, its own slot and the padding labelled ``-1``."""
        rows = self.row[index]
        labels = self.clicks[rows].clone()
        labels[torch.arange(index.numel()), self.slot[index]] = -1.0
        return self.scores[rows], labels


def reference_lists(log: CTRLog) -> ReferenceLists:
    """Every request's dumped scores and clicks (one sort by request, no loop over requests).

    ``reference_lists(log).batch(index)`` gives the reference lists of a batch of impressions; the memory is
    ``R × L`` (one row per request), not ``n × L``.
    """
    if log.dumped is None:
        raise ValueError("the log has no dumped scores: call with_dumped(serving_logits) first")
    scores, clicks, index = group_to_lists(log.dumped, log.click, log.request)
    length = max(scores.shape[1], 1)
    return ReferenceLists(scores, clicks, index // length, index % length)


class RequestBatches:
    """The batch of impressions of each training step, shuffled or grouped by request, as a function of the step.

    One epoch is ``ceil(n / batch_size)`` batches in both modes, so the two modes make the same number of optimiser
    updates. ``grouped=False``: a random permutation of the impressions cut into batches of ``batch_size``.
    ``grouped=True``: the requests in a random order, their impressions concatenated and cut at the request
    boundaries nearest to the multiples of ``batch_size`` (whole requests per batch, the batches of about the same
    size; every batch holds at least one request, so there must be at least as many requests as batches). The
    permutation of epoch ``e`` is drawn from ``seed`` and ``e``, so the batch of a step does not depend on the steps
    before it (a resumed run draws the same batches).
    """

    def __init__(self, request: Tensor, batch_size: int, *, grouped: bool, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if request.ndim != 1 or request.numel() == 0:
            raise ValueError("request must be a non-empty 1-D tensor of request ids")
        self.request = request.cpu()
        self.batch_size = batch_size
        self.grouped = grouped
        self.seed = seed
        self.n = int(request.numel())
        self.n_requests = int(request.max()) + 1
        self.batches_per_epoch = -(-self.n // batch_size)
        if grouped and self.n_requests < self.batches_per_epoch:
            raise ValueError(
                f"grouped batches need at least one request per batch: {self.n_requests} requests for "
                f"{self.batches_per_epoch} batches of {batch_size}"
            )
        self._epoch = -1
        self._batches: list[Tensor] = []

    def _draw(self, epoch: int) -> list[Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if not self.grouped:
            return list(torch.randperm(self.n, generator=gen).split(self.batch_size))
        rank = torch.randperm(self.n_requests, generator=gen)[self.request]
        order = torch.argsort(rank, stable=True)
        _, counts = torch.unique_consecutive(rank[order], return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()  # ends[r]: impressions in the first r + 1 requests
        cuts, last = [0], -1
        for k in range(1, self.batches_per_epoch):
            # the request boundary nearest to k · batch_size, leaving a request for each batch still to come
            low, high = last + 1, len(ends) - 1 - (self.batches_per_epoch - k)
            target = k * self.batch_size
            above = min(max(bisect.bisect_left(ends, target), low), high)
            below = min(max(above - 1, low), high)
            r = below if abs(ends[below] - target) <= abs(ends[above] - target) else above
            cuts.append(ends[r])
            last = r
        cuts.append(self.n)
        parts = [order[a:b] for a, b in itertools.pairwise(cuts)]
        return [parts[i] for i in torch.randperm(len(parts), generator=gen).tolist()]

    def __call__(self, step: int) -> Tensor:
        """The impression indices of optimiser update ``step`` (``0, 1, …``)."""
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._batches, self._epoch = self._draw(epoch), epoch
        return self._batches[position]


class CTRSimulator:
    """A fixed world of users and items; :meth:`sample` draws logs of requests from it.

    Args:
        n_users, n_items: population sizes.
        latent_dim: dimension of the latent user/item vectors.
        context_dim: dimension of the request context.
        feature_noise: standard deviation of the noise on the observed user/item features.
        request_bias_std: ``σ_b``, the hidden part of the request-level bias.
        base_logit: ``β``, which sets the average CTR.
        affinity_scale: ``γ``, the weight of the user–item affinity.
        seed: seed of the world.
    """

    def __init__(
        self,
        n_users: int = 3000,
        n_items: int = 2000,
        latent_dim: int = 8,
        context_dim: int = 4,
        feature_noise: float = 0.3,
        request_bias_std: float = 0.8,
        base_logit: float = -2.5,
        affinity_scale: float = 2.0,
        seed: int = 0,
    ) -> None:
        if n_users < 1 or n_items < 1 or latent_dim < 1 or context_dim < 1:
            raise ValueError("n_users, n_items, latent_dim and context_dim must be >= 1")
        if feature_noise < 0 or request_bias_std < 0:
            raise ValueError("feature_noise and request_bias_std must be >= 0")
        rng = np.random.default_rng(seed)
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.users = rng.normal(size=(n_users, latent_dim)) / latent_dim**0.25
        self.items = rng.normal(size=(n_items, latent_dim)) / latent_dim**0.25
        self.popularity = rng.normal(scale=0.5, size=n_items)
        self.w_bias = rng.normal(scale=0.5, size=context_dim)
        self.m_bias = rng.normal(size=(context_dim, context_dim))
        self.w_ctx = rng.normal(scale=0.5, size=context_dim)
        self.ctx_item = rng.normal(scale=0.5, size=(latent_dim,))
        self.feature_noise = feature_noise
        self.request_bias_std = request_bias_std
        self.base_logit = base_logit
        self.affinity_scale = affinity_scale
        self.user_obs = self.users + rng.normal(scale=feature_noise, size=self.users.shape)
        self.item_obs = self.items + rng.normal(scale=feature_noise, size=self.items.shape)

    def sample(self, n_requests: int, seed: int, min_candidates: int = 20, max_candidates: int = 200) -> CTRLog:
        """Draw ``n_requests`` requests of ``min_candidates``–``max_candidates`` candidates (float32 tensors)."""
        if n_requests < 1 or not 1 <= min_candidates <= max_candidates:
            raise ValueError("need n_requests >= 1 and 1 <= min_candidates <= max_candidates")
        rng = np.random.default_rng(seed)
        sizes = rng.integers(min_candidates, max_candidates + 1, n_requests)
        request = np.repeat(np.arange(n_requests), sizes)
        users = rng.integers(0, self.users.shape[0], n_requests)[request]
        context = rng.normal(size=(n_requests, self.context_dim))
        bias = (
            context @ self.w_bias
            + 0.5 * np.tanh(context @ self.m_bias).sum(1)
            + self.request_bias_std * rng.normal(size=n_requests)
        )
        items = rng.integers(0, self.items.shape[0], request.size)
        ctx = context[request]
        affinity = (self.users[users] * self.items[items]).sum(1)
        interaction = (ctx @ self.w_ctx) * (self.items[items] @ self.ctx_item)
        logit = self.base_logit + bias[request] + self.affinity_scale * affinity + self.popularity[items] + interaction
        prob = 1.0 / (1.0 + np.exp(-logit))
        click = (rng.uniform(size=prob.size) < prob).astype(np.float32)

        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=torch.float32)

        return CTRLog(
            user=t(self.user_obs[users]),
            item=t(self.item_obs[items]),
            context=t(ctx),
            request=torch.as_tensor(request, dtype=torch.long),
            click=t(click),
            true_prob=t(prob),
        )
