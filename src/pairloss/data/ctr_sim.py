"""A simulated CTR system with known click probabilities: requests, candidates, clicks and dumped serving scores.

Each request has a user, a context and 10–50 candidate items. The true click logit of candidate ``i`` in request
``q`` (user ``u``, context ``c``) is

    z_qi = β + b_q + γ ⟨U_u, V_i⟩ + π_i + ⟨w, c⟩ ⟨c', V_i⟩,     b_q = ⟨w_b, c⟩ + σ_b ε_q

with latent user/item vectors ``U``, ``V``, item popularity ``π``, and a request-level bias ``b_q`` that is only
partly predictable from the context (``ε_q`` is hidden). Clicks are ``Bernoulli(σ(z))``. The model sees noisy
views of ``U`` and ``V`` and the context, never ``z``. A serving model's logits can be dumped into a log
(:meth:`CTRLog.with_dumped`) and turned into each impression's reference list (:func:`reference_lists`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from pairloss.losses._lists import group_to_lists

__all__ = ["CTRLog", "CTRSimulator", "reference_lists"]


@dataclass(frozen=True)
class CTRLog:
    """Impressions, one row each (``n`` rows).

    Attributes:
        user: ``[n, d_u]`` observed user features (the same for all impressions of a request).
        item: ``[n, d_i]`` observed item features.
        context: ``[n, d_c]`` request context features.
        request: ``[n]`` request id.
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
        return replace(self, dumped=logits.detach().to(self.click.dtype))


def reference_lists(log: CTRLog) -> tuple[Tensor, Tensor]:
    """For each impression, the dumped logits and clicks of the *other* candidates of its request.

    Returns ``(ref_scores [n, M], ref_labels [n, M])``, ``M`` the largest request; padding and the impression's own
    slot have label ``-1``. Built with one sort by request (no loop over requests).
    """
    if log.dumped is None:
        raise ValueError("the log has no dumped scores: call with_dumped(serving_logits) first")
    scores, labels, index = group_to_lists(log.dumped, log.click, log.request)
    length = scores.shape[1]
    row = index // length
    ref_scores = scores[row]
    ref_labels = labels[row].clone()
    ref_labels[torch.arange(len(log)), index % length] = -1.0
    return ref_scores, ref_labels


class CTRSimulator:
    """A fixed world of users and items; :meth:`sample` draws logs of requests from it.

    Args:
        n_users, n_items: population sizes.
        latent_dim: dimension of the latent user/item vectors.
        context_dim: dimension of the request context.
        feature_noise: standard deviation of the noise on the observed user/item features.
        request_bias_std: ``σ_b``, the hidden part of the request-level bias.
        base_logit: ``β``, which sets the average CTR.
        seed: seed of the world.
    """

    def __init__(
        self,
        n_users: int = 2000,
        n_items: int = 1000,
        latent_dim: int = 8,
        context_dim: int = 4,
        feature_noise: float = 0.3,
        request_bias_std: float = 0.8,
        base_logit: float = -2.0,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.users = rng.normal(size=(n_users, latent_dim)) / latent_dim**0.25
        self.items = rng.normal(size=(n_items, latent_dim)) / latent_dim**0.25
        self.popularity = rng.normal(scale=0.5, size=n_items)
        self.w_bias = rng.normal(scale=0.5, size=context_dim)
        self.w_ctx = rng.normal(scale=0.5, size=context_dim)
        self.ctx_item = rng.normal(scale=0.5, size=(latent_dim,))
        self.feature_noise = feature_noise
        self.request_bias_std = request_bias_std
        self.base_logit = base_logit
        self.user_obs = self.users + rng.normal(scale=feature_noise, size=self.users.shape)
        self.item_obs = self.items + rng.normal(scale=feature_noise, size=self.items.shape)

    def sample(self, n_requests: int, seed: int, min_candidates: int = 10, max_candidates: int = 50) -> CTRLog:
        """Draw ``n_requests`` requests of ``min_candidates``–``max_candidates`` candidates (float32 tensors)."""
        if n_requests < 1 or not 1 <= min_candidates <= max_candidates:
            raise ValueError("need n_requests >= 1 and 1 <= min_candidates <= max_candidates")
        rng = np.random.default_rng(seed)
        sizes = rng.integers(min_candidates, max_candidates + 1, n_requests)
        request = np.repeat(np.arange(n_requests), sizes)
        users = rng.integers(0, self.users.shape[0], n_requests)[request]
        context = rng.normal(size=(n_requests, self.context_dim))
        bias = context @ self.w_bias + self.request_bias_std * rng.normal(size=n_requests)
        items = rng.integers(0, self.items.shape[0], request.size)
        ctx = context[request]
        affinity = (self.users[users] * self.items[items]).sum(1)
        interaction = (ctx @ self.w_ctx) * (self.items[items] @ self.ctx_item)
        logit = self.base_logit + bias[request] + 2.0 * affinity + self.popularity[items] + interaction
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
