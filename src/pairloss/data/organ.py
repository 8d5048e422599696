"""A kidney-allocation simulator with a known post-transplant outcome, for top-N organ recommendation.

Real allocation data (UNOS/SRTR registries) cannot be had here, so this module generates donors, per-donor
candidate lists of waiting-list patients, a first-principles allocation score in the spirit of the US Kidney
Allocation System (KAS), and a hidden outcome that the score only partly captures. Everything is drawn with one
``numpy.random.Generator`` seeded by ``seed``: the same arguments always give the same arrays.

Generative model (``D`` donors, ``L`` ABO-compatible candidates per donor; ``U``, ``N``, ``Γ``, ``B`` = uniform,
normal, gamma, Bernoulli):

* **Patients**: age ``~ U(18, 75)``, diabetes ``~ B(0.3)``, years on dialysis ``~ Γ(2, 1.2)`` (0 with probability
  0.1: pre-emptive listing), prior transplant ``~ B(0.12)``, CPRA ``~ Beta(0.4, 1.6)``, years waiting
  ``~ Γ(2, 1.5)``, weight ``~ N(80, 15)`` kg, two HLA antigens at each of the A, B, DR loci drawn from skewed
  allele frequencies, blood type drawn among the types compatible with the donor (O donors give to all, A to A/AB,
  B to B/AB, AB to AB).
* **EPTS** (estimated post-transplant survival, lower is better) uses the OPTN raw-score terms
  ``0.047·max(age−25, 0) − 0.015·dm·max(age−25, 0) + 0.398·prior − 0.237·dm·prior + 0.315·log(dial+1)
  − 0.099·dm·log(dial+1) + 0.130·[dial=0] − 0.348·dm·[dial=0] + 1.262·dm``, turned into a percentile over
  all generated patients.
* **Donors**: age ``~ U(18, 75)``, height ``~ N(170, 10)`` cm, weight ``~ N(80, 15)`` kg, hypertension ``~ B(0.3)``,
  diabetes ``~ B(0.08)``, creatinine ``~ LogNormal(0, 0.35)`` mg/dL, stroke death ``~ B(0.3)``, DCD ``~ B(0.2)``,
  blood type ``O/A/B/AB`` with probabilities ``0.45/0.40/0.11/0.04``. **KDPI** is the percentile of the KDRI
  log-score ``0.0128·(age−40) + 0.0107·max(age−50, 0) − 0.0464·(height−170)/10 − 0.0199·min(weight−80, 0)/5
  + 0.126·htn + 0.130·dm + 0.088·stroke + 0.220·(cr−1) − 0.209·max(cr−1.5, 0) + 0.133·dcd``.
* **HLA mismatches**: at each locus, the number (0–2) of distinct donor antigens absent from the patient.
* **KAS-like score** (what the allocation system ranks by, larger first): waiting years
  ``+ 12·CPRA⁴`` (sensitisation points, steep near 100%) ``+ 2·[DR mm = 0] + 1·[DR mm = 1]``
  ``+ 4·[EPTS ≤ 20% and KDPI ≤ 20%]`` (longevity matching) ``+ 1·[ABO identical]``.
* **Hidden outcome** (graft-years of good quality of life, larger is better):
  ``y = 10 − 4·EPTS − 3·KDPI − 0.08·|age_d − age_p| − 2.5·max(w_p / w_d − 1.1, 0) − 0.25·mm_A − 0.35·mm_B
  − 0.6·mm_DR − 2·CPRA·mm_total/6 − 1.2·dm_p·htn_d + 0.6·[age_p < 45]·[age_d < 35] + ε``, ``ε ~ N(0, σ)``.
  The score ignores the age gap, the size mismatch, most HLA effects, the CPRA × mismatch interaction and the
  diabetes × hypertension interaction: a model that corrects the score with the covariates can learn them.
* **Historical sample**: only the donors with ``observed`` set (a fraction ``observed_fraction``) have their
  candidates' outcomes observed, with extra measurement noise ``N(0, observation_noise)``; evaluation uses the
  noise-free ``outcome``.

Relevance grades for graded ranking losses come from the within-list rank of an outcome: 4 for the top 5% of a
donor's list, 3 for the next 10%, 2 for the next 15%, 1 for the next 20%, 0 for the bottom half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["OrganMatchingData", "grade_within_lists", "simulate_organ_matching", "top_n_relevant"]

#: Column names of :attr:`OrganMatchingData.features` (one row per donor–candidate pair).
FEATURE_NAMES = (
    "patient_age",
    "patient_diabetes",
    "dialysis_years",
    "prior_transplant",
    "cpra",
    "waiting_years",
    "patient_weight",
    "epts",
    "donor_age",
    "donor_height",
    "donor_weight",
    "donor_hypertension",
    "donor_diabetes",
    "donor_creatinine",
    "donor_stroke",
    "donor_dcd",
    "kdpi",
    "mismatch_a",
    "mismatch_b",
    "mismatch_dr",
    "abo_identical",
)

_ABO_P = np.array([0.45, 0.40, 0.11, 0.04])  # O, A, B, AB
#: ``_COMPATIBLE[d, p]``: a donor of type ``d`` may give to a patient of type ``p``.
_COMPATIBLE = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
_ALLELES = {"A": 10, "B": 14, "DR": 8}
_GRADE_CUTS = (0.5, 0.7, 0.85, 0.95)


@dataclass(frozen=True)
class OrganMatchingData:
    """A simulated allocation: ``D`` donors, each with a list of ``L`` compatible candidates.

    Attributes:
        features: ``[D, L, F]`` float32 covariates of each donor–candidate pair (columns: ``FEATURE_NAMES``).
        kas_score: ``[D, L]`` the KAS-like allocation score (the existing scoring model, larger first).
        outcome: ``[D, L]`` the hidden, noise-free post-transplant outcome (larger is better).
        observed_outcome: ``[D, L]`` the outcome plus measurement noise (only meaningful where ``observed``).
        observed: ``[D]`` bool, the donors of the historical sample whose outcomes were recorded.
        feature_names: the names of the feature columns.
    """

    features: Tensor
    kas_score: Tensor
    outcome: Tensor
    observed_outcome: Tensor
    observed: Tensor
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @property
    def n_donors(self) -> int:
        return int(self.features.shape[0])

    @property
    def list_size(self) -> int:
        return int(self.features.shape[1])


def _percentile(values: np.ndarray) -> np.ndarray:
    """Percentile rank in ``[0, 1]`` of every entry among all entries (ties broken by position)."""
    flat = values.ravel()
    order = flat.argsort(kind="stable")
    ranks = np.empty_like(flat)
    ranks[order] = np.arange(flat.size, dtype=flat.dtype)
    return (ranks / max(flat.size - 1, 1)).reshape(values.shape)


def _hla(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Two antigens per locus, shape ``shape + (2,)``, from Zipf-like allele frequencies."""
    typed = {}
    for locus, n in _ALLELES.items():
        p = 1.0 / np.arange(1, n + 1)
        typed[locus] = rng.choice(n, size=(*shape, 2), p=p / p.sum())
    return typed


def _mismatches(donor: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Distinct donor antigens ``[D, 1, 2]`` absent from the patient ``[D, L, 2]``: ``[D, L]`` in ``{0, 1, 2}``."""
    present = (donor[..., :, None] == patient[..., None, :]).any(-1)  # [D, L, 2]
    duplicate = donor[..., 0] == donor[..., 1]  # a homozygous donor antigen counts once
    missing = (~present).astype(np.int64)
    return missing[..., 0] + missing[..., 1] * (~duplicate)


def simulate_organ_matching(
    n_donors: int = 400,
    list_size: int = 50,
    *,
    observed_fraction: float = 0.5,
    outcome_noise: float = 0.5,
    observation_noise: float = 0.5,
    seed: int = 0,
) -> OrganMatchingData:
    """Generate donors, candidate lists, the KAS-like score and the hidden outcome (see the module docstring).

    Args:
        n_donors: number of donors ``D`` (one candidate list each).
        list_size: candidates per donor ``L``.
        observed_fraction: share of donors whose outcomes form the historical (training) sample.
        outcome_noise: standard deviation of the unexplained part ``ε`` of the outcome.
        observation_noise: extra noise on the recorded outcomes of the historical sample.
        seed: seed of the generator; equal seeds give equal data.
    """
    if n_donors < 1 or list_size < 1:
        raise ValueError(f"n_donors and list_size must be >= 1, got {n_donors} and {list_size}")
    if not 0.0 <= observed_fraction <= 1.0:
        raise ValueError(f"observed_fraction must be in [0, 1], got {observed_fraction}")
    if outcome_noise < 0 or observation_noise < 0:
        raise ValueError("outcome_noise and observation_noise must be >= 0")
    rng = np.random.default_rng(seed)
    d, shape = n_donors, (n_donors, list_size)

    # Donors.
    d_age = rng.uniform(18, 75, d)
    d_height = rng.normal(170, 10, d)
    d_weight = np.clip(rng.normal(80, 15, d), 40, 150)
    d_htn = rng.random(d) < 0.3
    d_dm = rng.random(d) < 0.08
    d_cr = rng.lognormal(0.0, 0.35, d)
    d_stroke = rng.random(d) < 0.3
    d_dcd = rng.random(d) < 0.2
    d_abo = rng.choice(4, size=d, p=_ABO_P)
    kdri = (
        0.0128 * (d_age - 40)
        + 0.0107 * np.maximum(d_age - 50, 0)
        - 0.0464 * (d_height - 170) / 10
        - 0.0199 * np.minimum(d_weight - 80, 0) / 5
        + 0.126 * d_htn
        + 0.130 * d_dm
        + 0.088 * d_stroke
        + 0.220 * (d_cr - 1)
        - 0.209 * np.maximum(d_cr - 1.5, 0)
        + 0.133 * d_dcd
    )
    kdpi = _percentile(kdri)

    # Candidates (ABO-compatible with their donor).
    p_age = rng.uniform(18, 75, shape)
    p_dm = rng.random(shape) < 0.3
    dialysis = rng.gamma(2.0, 1.2, shape) * (rng.random(shape) >= 0.1)
    prior = rng.random(shape) < 0.12
    cpra = rng.beta(0.4, 1.6, shape)
    waiting = rng.gamma(2.0, 1.5, shape)
    p_weight = np.clip(rng.normal(80, 15, shape), 40, 150)
    compatible_p = _COMPATIBLE[d_abo] * _ABO_P  # [D, 4]
    compatible_p /= compatible_p.sum(1, keepdims=True)
    cumulative = compatible_p.cumsum(1)
    p_abo = (rng.random(shape)[..., None] > cumulative[:, None, :]).sum(-1)
    p_abo = np.minimum(p_abo, 3)
    older = np.maximum(p_age - 25, 0)
    log_dial = np.log(dialysis + 1)
    no_dial = dialysis == 0
    epts_raw = (
        0.047 * older
        - 0.015 * p_dm * older
        + 0.398 * prior
        - 0.237 * p_dm * prior
        + 0.315 * log_dial
        - 0.099 * p_dm * log_dial
        + 0.130 * no_dial
        - 0.348 * p_dm * no_dial
        + 1.262 * p_dm
    )
    epts = _percentile(epts_raw)

    donor_hla, patient_hla = _hla(rng, (d, 1)), _hla(rng, shape)
    mm = {locus: _mismatches(donor_hla[locus], patient_hla[locus]) for locus in _ALLELES}
    mm_total = mm["A"] + mm["B"] + mm["DR"]
    abo_identical = p_abo == d_abo[:, None]

    kas = (
        waiting
        + 12 * cpra**4
        + 2.0 * (mm["DR"] == 0)
        + 1.0 * (mm["DR"] == 1)
        + 4.0 * ((epts <= 0.2) & (kdpi[:, None] <= 0.2))
        + 1.0 * abo_identical
    )
    outcome = (
        10
        - 4 * epts
        - 3 * kdpi[:, None]
        - 0.08 * np.abs(d_age[:, None] - p_age)
        - 2.5 * np.maximum(p_weight / d_weight[:, None] - 1.1, 0)
        - 0.25 * mm["A"]
        - 0.35 * mm["B"]
        - 0.6 * mm["DR"]
        - 2 * cpra * mm_total / 6
        - 1.2 * (p_dm & d_htn[:, None])
        + 0.6 * ((p_age < 45) & (d_age[:, None] < 35))
        + rng.normal(0, outcome_noise, shape)
    )
    observed_outcome = outcome + rng.normal(0, observation_noise, shape)
    observed = np.zeros(d, dtype=bool)
    observed[rng.permutation(d)[: round(observed_fraction * d)]] = True

    def donor_col(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x[:, None], shape)

    columns = [
        p_age, p_dm, dialysis, prior, cpra, waiting, p_weight, epts,
        donor_col(d_age), donor_col(d_height), donor_col(d_weight), donor_col(d_htn), donor_col(d_dm),
        donor_col(d_cr), donor_col(d_stroke), donor_col(d_dcd), donor_col(kdpi),
        mm["A"], mm["B"], mm["DR"], abo_identical,
    ]  # fmt: skip
    features = np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=-1)
    return OrganMatchingData(
        features=torch.from_numpy(features),
        kas_score=torch.from_numpy(kas.astype(np.float32)),
        outcome=torch.from_numpy(outcome.astype(np.float32)),
        observed_outcome=torch.from_numpy(observed_outcome.astype(np.float32)),
        observed=torch.from_numpy(observed),
    )


def grade_within_lists(outcome: Tensor) -> Tensor:
    """Graded relevance ``[D, L]`` in ``{0..4}`` from each list's rank quantiles of ``outcome`` (larger = better).

    An item whose outcome is above the ``q`` within-list quantile gets one grade per cut ``q`` in
    ``(0.5, 0.7, 0.85, 0.95)``: the top 5% get 4, the bottom half 0.
    """
    n = outcome.shape[-1]
    ranks = outcome.argsort(-1).argsort(-1).to(torch.float64)  # 0 = worst
    quantile = (ranks + 0.5) / n
    grade = torch.zeros_like(outcome, dtype=torch.long)
    for cut in _GRADE_CUTS:
        grade += (quantile > cut).long()
    return grade


def top_n_relevant(outcome: Tensor, n: int) -> Tensor:
    """Boolean ``[D, L]``: the ``n`` best candidates of each list by ``outcome`` (the ground-truth top-N set)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(n, outcome.shape[-1])
    index = outcome.topk(n, dim=-1).indices
    return torch.zeros_like(outcome, dtype=torch.bool).scatter_(-1, index, True)
