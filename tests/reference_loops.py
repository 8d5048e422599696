"""Slow, obviously-correct references: explicit Python loops over pairs and triplets, from each formula.

Every function takes plain tensors, converts them to Python floats and returns a Python float; they are meant
for inputs of a dozen samples. ``score`` names the pair score: ``"euclidean"`` (‖x̂ − ŷ‖ between L2-normalised
vectors, PML's default ``LpDistance()``), ``"cosine"`` (x̂·ŷ) or ``"dot"`` (x·y on raw vectors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

Vector = list[float]

DISTANCES = ("euclidean", "sqeuclidean")


def _rows(x: Tensor) -> list[Vector]:
    return [[float(v) for v in row] for row in x.detach().cpu().tolist()]


def _unit(v: Vector) -> Vector:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / max(norm, 1e-12) for a in v]


def score_fn(score: str) -> Callable[[Vector, Vector], float]:
    """The pair score ``s(x, y)`` as a function of two raw vectors."""

    def euclidean(x: Vector, y: Vector) -> float:
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(_unit(x), _unit(y))))

    def sqeuclidean(x: Vector, y: Vector) -> float:
        return sum((a - b) ** 2 for a, b in zip(_unit(x), _unit(y)))

    def cosine(x: Vector, y: Vector) -> float:
        return sum(a * b for a, b in zip(_unit(x), _unit(y)))

    def dot(x: Vector, y: Vector) -> float:
        return sum(a * b for a, b in zip(x, y))

    return {"euclidean": euclidean, "sqeuclidean": sqeuclidean, "cosine": cosine, "dot": dot}[score]


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return any(x and y for x, y in zip(a, b))
    return a == b


class Pairs:
    """Scores and pair relations of a batch against itself (self excluded) or against a reference set."""

    def __init__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        score: str = "euclidean",
    ) -> None:
        self.queries = _rows(embeddings)
        self.query_labels = labels.tolist()
        self.self_pairs = ref_emb is None
        self.references = self.queries if ref_emb is None else _rows(ref_emb)
        self.reference_labels = self.query_labels if ref_labels is None else ref_labels.tolist()
        s = score_fn(score)
        self.s = [[s(q, r) for r in self.references] for q in self.queries]
        self.is_distance = score in DISTANCES

    def anchors(self) -> range:
        return range(len(self.queries))

    def positives(self, i: int) -> list[int]:
        return [
            j
            for j in range(len(self.references))
            if not (self.self_pairs and i == j) and _same(self.query_labels[i], self.reference_labels[j])
        ]

    def negatives(self, i: int) -> list[int]:
        return [
            j
            for j in range(len(self.references))
            if not (self.self_pairs and i == j) and not _same(self.query_labels[i], self.reference_labels[j])
        ]

    def far(self, i: int, j: int) -> float:
        """Larger = farther: the distance, or minus the similarity."""
        return self.s[i][j] if self.is_distance else -self.s[i][j]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _mean_nonzero(values: Sequence[float]) -> float:
    return _mean([v for v in values if v > 0])


def _log1p_sum_exp(values: Sequence[float]) -> float:
    return math.log(1.0 + sum(math.exp(v) for v in values))


def _log_sum_exp(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _softplus(x: float) -> float:
    return x if x > 20 else math.log1p(math.exp(x))


def contrastive(pairs: Pairs, pos_margin: float = 0.0, neg_margin: float = 1.0) -> float:
    pos, neg = [], []
    for i in pairs.anchors():
        pos += [
            max(pairs.far(i, j) + (pos_margin if not pairs.is_distance else -pos_margin), 0.0)
            for j in pairs.positives(i)
        ]
        neg += [
            max((neg_margin if pairs.is_distance else -neg_margin) - pairs.far(i, j), 0.0) for j in pairs.negatives(i)
        ]
    return _mean_nonzero(pos) + _mean_nonzero(neg)


def triplet(pairs: Pairs, margin: float = 0.05, mining: str = "all", smooth: bool = False) -> float:
    losses = []
    link = _softplus if smooth else (lambda v: max(v, 0.0))
    for a in pairs.anchors():
        positives, negatives = pairs.positives(a), pairs.negatives(a)
        if mining == "batch_hard":
            if positives and negatives:
                hardest_p = max(pairs.far(a, p) for p in positives)
                hardest_n = min(pairs.far(a, n) for n in negatives)
                losses.append(link(hardest_p - hardest_n + margin))
            continue
        for p in positives:
            for n in negatives:
                gap = pairs.far(a, n) - pairs.far(a, p)
                if mining == "semihard" and not (0 < gap <= margin):
                    continue
                losses.append(link(margin - gap))
    return _mean_nonzero(losses)


def multi_similarity(pairs: Pairs, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5) -> float:
    total = 0.0
    for i in pairs.anchors():
        total += _log1p_sum_exp([-alpha * (pairs.s[i][p] - base) for p in pairs.positives(i)]) / alpha
        total += _log1p_sum_exp([beta * (pairs.s[i][n] - base) for n in pairs.negatives(i)]) / beta
    return total / len(pairs.queries)


def circle(pairs: Pairs, m: float = 0.4, gamma: float = 80.0) -> float:
    losses = []
    for i in pairs.anchors():
        positives, negatives = pairs.positives(i), pairs.negatives(i)
        if not positives or not negatives:
            continue
        lp = [-gamma * max(1 + m - pairs.s[i][p], 0.0) * (pairs.s[i][p] - (1 - m)) for p in positives]
        ln = [gamma * max(pairs.s[i][n] + m, 0.0) * (pairs.s[i][n] - m) for n in negatives]
        losses.append(_softplus(_log_sum_exp(lp) + _log_sum_exp(ln)))
    return _mean_nonzero(losses)


def generalized_lifted_structure(pairs: Pairs, neg_margin: float = 1.0, pos_margin: float = 0.0) -> float:
    """A similarity flips the signs (PML's ``distance.margin``)."""
    sign = 1.0 if pairs.is_distance else -1.0
    total = 0.0
    for i in pairs.anchors():
        lp = _log_sum_exp([sign * (pairs.s[i][p] - pos_margin) for p in pairs.positives(i)])
        ln = _log_sum_exp([sign * (neg_margin - pairs.s[i][n]) for n in pairs.negatives(i)])
        total += max(lp + ln, 0.0)
    return total / len(pairs.queries)


def lifted_structure(pairs: Pairs, neg_margin: float = 1.0, pos_margin: float = 0.0) -> float:
    losses = []
    for i in pairs.anchors():
        for j in pairs.positives(i):
            negatives = [neg_margin - pairs.s[i][k] for k in pairs.negatives(i)]
            negatives += [neg_margin - pairs.s[j][k] for k in pairs.negatives(j)]
            losses.append(max(_log_sum_exp(negatives) + pairs.s[i][j] - pos_margin, 0.0) ** 2 / 2)
    return _mean(losses)


def ntxent(pairs: Pairs, temperature: float = 0.07) -> float:
    """Logits −far/τ: s/τ for a similarity, −d/τ for a distance (as PML)."""
    losses = []
    for i in pairs.anchors():
        negatives = [-pairs.far(i, n) / temperature for n in pairs.negatives(i)]
        for p in pairs.positives(i):
            positive = -pairs.far(i, p) / temperature
            losses.append(-(positive - _log_sum_exp([positive, *negatives])))
    return _mean(losses)


def supcon(pairs: Pairs, temperature: float = 0.1) -> float:
    """Logits −far/τ: s/τ for a similarity, −d/τ for a distance (as PML)."""
    losses = []
    for i in pairs.anchors():
        positives = pairs.positives(i)
        if not positives:
            continue
        everyone = [-pairs.far(i, j) / temperature for j in positives + pairs.negatives(i)]
        normaliser = _log_sum_exp(everyone)
        losses.append(-_mean([-pairs.far(i, p) / temperature - normaliser for p in positives]))
    return _mean_nonzero(losses)


def margin(pairs: Pairs, margin: float = 0.2, beta: Sequence[float] = (1.2,), nu: float = 0.0) -> float:
    total, active, regulariser, triplets = 0.0, 0, 0.0, 0
    for a in pairs.anchors():
        b = beta[0] if len(beta) == 1 else beta[pairs.query_labels[a]]
        for p in pairs.positives(a):
            for n in pairs.negatives(a):
                pos_loss = max(pairs.s[a][p] - b + margin, 0.0)
                neg_loss = max(b - pairs.s[a][n] + margin, 0.0)
                total += pos_loss + neg_loss
                active += (pos_loss > 0) + (neg_loss > 0)
                regulariser += b * nu
                triplets += 1
    if triplets == 0:
        return 0.0
    loss = total / active if active else 0.0
    if nu:
        loss += beta[0] * nu if len(beta) == 1 else (regulariser / active if active else 0.0)
    return loss


def npairs(embeddings: Tensor, labels: Tensor) -> float:
    x, y = _rows(embeddings), labels.tolist()
    anchors, positives = [], []
    for c in sorted(set(y)):
        members = [i for i, label in enumerate(y) if label == c]
        if len(members) >= 2:
            anchors.append(x[members[0]])
            positives.append(x[members[1]])
    s = score_fn("cosine")
    losses = []
    for k, a in enumerate(anchors):
        logits = [s(a, p) for p in positives]
        losses.append(_log_sum_exp(logits) - logits[k])
    return _mean(losses)


def _cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    return _mean([_log_sum_exp(row) - row[y] for row, y in zip(logits, labels)])


def proxy_anchor(
    embeddings: Tensor, labels: Tensor, proxies: Tensor, margin: float = 0.1, alpha: float = 32.0
) -> float:
    x, y, p = _rows(embeddings), labels.tolist(), _rows(proxies)
    s = score_fn("cosine")
    present = sorted(set(y))
    pos = sum(_log1p_sum_exp([-alpha * (s(x[i], p[c]) - margin) for i in range(len(x)) if y[i] == c]) for c in present)
    neg = sum(
        _log1p_sum_exp([alpha * (s(x[i], p[c]) + margin) for i in range(len(x)) if y[i] != c]) for c in range(len(p))
    )
    return pos / len(present) + neg / len(p)


def proxy_nca(embeddings: Tensor, labels: Tensor, proxies: Tensor, softmax_scale: float = 1.0) -> float:
    x, p = _rows(embeddings), _rows(proxies)
    d = score_fn("sqeuclidean")
    return _cross_entropy([[-softmax_scale * d(xi, pc) for pc in p] for xi in x], labels.tolist())


def normalized_softmax(embeddings: Tensor, labels: Tensor, weight: Tensor, temperature: float = 0.05) -> float:
    x, w = _rows(embeddings), _rows(weight.T)
    s = score_fn("cosine")
    return _cross_entropy([[s(xi, wc) / temperature for wc in w] for xi in x], labels.tolist())


def arcface(embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float = 28.6, scale: float = 64.0) -> float:
    x, w, y = _rows(embeddings), _rows(weight.T), labels.tolist()
    s, m = score_fn("cosine"), math.radians(margin)
    logits = []
    for xi, yi in zip(x, y):
        row = [s(xi, wc) for wc in w]
        theta = math.acos(max(-1.0, min(1.0, row[yi])))
        row[yi] = math.cos(theta + m) if theta <= math.pi - m else math.cos(theta) - m * math.sin(m)
        logits.append([scale * v for v in row])
    return _cross_entropy(logits, y)


def cosface(embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float = 0.35, scale: float = 64.0) -> float:
    x, w, y = _rows(embeddings), _rows(weight.T), labels.tolist()
    s = score_fn("cosine")
    logits = [[scale * (s(xi, wc) - (margin if c == yi else 0.0)) for c, wc in enumerate(w)] for xi, yi in zip(x, y)]
    return _cross_entropy(logits, y)


def _reduce(values: Sequence[float], reducer: str, low: float | None = None, high: float | None = None) -> float:
    """PML's reducers on a list of per-element losses."""
    if reducer == "sum":
        return sum(values)
    if reducer == "mean":
        return _mean(values)
    kept = [v for v in values if (low is None or v > low) and (high is None or v < high)]
    return _mean(kept)


def pair_loss(
    pairs: Pairs,
    positive_link: Callable[[float], float],
    negative_link: Callable[[float], float] | None = None,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.0,
    reducer: str = "mean",
    pooled: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> float:
    """A loss of the builder's pair form: each positive pair costs ``φ⁺(z)`` with the margin ``z = s − m_pos``,
    each negative ``φ⁻(m_neg − s)`` (a distance flips both), each kind reduced on its own (or ``pooled``)."""
    negative_link = positive_link if negative_link is None else negative_link
    sign = -1.0 if pairs.is_distance else 1.0
    pos, neg = [], []
    for i in pairs.anchors():
        pos += [positive_link(sign * (pairs.s[i][j] - pos_margin)) for j in pairs.positives(i)]
        neg += [negative_link(sign * (neg_margin - pairs.s[i][j])) for j in pairs.negatives(i)]
    if pooled:
        return _reduce(pos + neg, reducer, low, high)
    return _reduce(pos, reducer, low, high) + _reduce(neg, reducer, low, high)


def row_loss(
    pairs: Pairs,
    gamma: tuple[float, float],
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.0,
    add_one: bool = True,
    combine: Callable[[float], float] | None = None,
    reducer: str = "mean",
    low: float | None = None,
) -> float:
    """A loss of the builder's row form: per anchor ``ψ⁺ + ψ⁻`` with ``ψ = (1/γ) log([1 +] Σ e^{−γ z})`` over its
    positive (negative) margins, optionally through ``combine(ψ⁺ + ψ⁻)``; then reduced over anchors."""
    sign = -1.0 if pairs.is_distance else 1.0
    losses = []
    for i in pairs.anchors():
        parts = []
        for kind, g in zip(("pos", "neg"), gamma):
            members = pairs.positives(i) if kind == "pos" else pairs.negatives(i)
            zs = [
                sign * (pairs.s[i][j] - pos_margin) if kind == "pos" else sign * (neg_margin - pairs.s[i][j])
                for j in members
            ]
            exponents = [-g * z for z in zs]
            if add_one:
                parts.append(_log1p_sum_exp(exponents) / g)
            else:
                parts.append(_log_sum_exp(exponents) / g)
        value = parts[0] + parts[1]
        losses.append(value if combine is None else combine(value))
    return _reduce(losses, reducer, low)
