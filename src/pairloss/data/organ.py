"""A kidney-allocation simulator for top-N organ recommendation, whose response is simulated from KAS.

Shojaee, Chen and Jin validate AWTR "in a simulation study, where KAS is used to simulate the organ-patient
recommendation response": the ranking that the learned model must recover comes from the US Kidney Allocation
System (KAS, in force since December 2014), and the model improves an existing first-principles scoring model with
the covariates of donors and patients and a limited historical sample of responses. Real registry data (UNOS/SRTR)
cannot be had here, so this module generates donors, their candidate lists, both scores and the response. The
paper gives no more detail of its simulation; the distributions below, the choice of the pre-2014 UNOS point
system as the existing score and the response noise are the library's choices. Everything is drawn with one
``numpy.random.Generator`` seeded by ``seed``: the same arguments always give the same arrays.

Generative model (``D`` donors, ``L`` ABO-compatible adult candidates per donor; ``U``, ``N``, ``Γ``, ``B`` =
uniform, normal, gamma, Bernoulli):

* **Candidates**: age ``~ U(18, 75)``, diabetes ``~ B(0.3)``, years on dialysis ``~ Γ(2, 1.2)`` (0 with probability
  0.1: pre-emptive listing), years since listing ``~ Γ(2, 1.5)``, prior transplant ``~ B(0.12)``, prior living
  donor ``~ B(0.02)``, CPRA 0 with probability 0.55 and ``U(0, 1)^0.7`` otherwise (about 12% above 80%, 1.3% at
  98% or more), weight ``~ N(80, 15)`` kg, two HLA antigens at each of the A, B, DR loci from skewed allele
  frequencies, a blood type compatible with the donor's.
* **EPTS** (lower is better) from the OPTN raw-score terms ``0.047·max(age−25, 0) − 0.015·dm·max(age−25, 0)
  + 0.398·prior − 0.237·dm·prior + 0.315·log(dial+1) − 0.099·dm·log(dial+1) + 0.130·[dial=0] − 0.348·dm·[dial=0]
  + 1.262·dm``, as a percentile over all generated candidates.
* **Donors**: age ``~ U(18, 75)``, height ``~ N(170, 10)``, weight ``~ N(80, 15)``, hypertension ``~ B(0.3)``,
  diabetes ``~ B(0.08)``, creatinine ``~ LogNormal(0, 0.35)``, stroke death ``~ B(0.3)``, DCD ``~ B(0.2)``, blood
  type O/A/B/AB ``0.45/0.40/0.11/0.04``; **KDPI** is the percentile of the KDRI log-score ``0.0128·(age−40)
  + 0.0107·max(age−50, 0) − 0.0464·(height−170)/10 − 0.0199·min(weight−80, 0)/5 + 0.126·htn + 0.130·dm
  + 0.088·stroke + 0.220·(cr−1) − 0.209·max(cr−1.5, 0) + 0.133·dcd``.
* **HLA mismatches**: at each locus, the number (0–2) of distinct donor antigens absent from the candidate.
* **KAS response** (:func:`kas_points`; larger = offered first): waiting time in years counted from the earlier of
  listing and the start of dialysis, ``+`` the CPRA sliding scale of OPTN policy 8 (0 below 20%, 0.08 at 20–29%,
  …, 24.40 at 98%, 50.09 at 99%, 202.10 at 100%), ``+ 2·[DR mm = 0] + 1·[DR mm = 1]``, ``+ 4·[prior living
  donor]``, and longevity matching as a priority tier: for a donor with KDPI ≤ 20% the candidates with EPTS ≤ 20%
  come first (``+ LONGEVITY_TIER`` points). KAS's geographic and pediatric rules do not apply to one list of adults.
* **Existing score** (:func:`pre_kas_points`, the first-principles model that AWTR corrects): the UNOS point system
  before KAS, waiting time counted from listing only, ``+ 4·[CPRA ≥ 80%] + 2·[DR mm = 0] + 1·[DR mm = 1]
  + 4·[prior living donor]``. It misses the dialysis time before listing, the sliding CPRA scale and longevity
  matching, so it disagrees with the response most at the top of the lists.
* **Historical sample**: only the donors with ``observed`` set (a fraction ``observed_fraction``) have a recorded
  response, with noise ``N(0, response_noise)`` in KAS points; evaluation uses the noise-free ``response``.

Relevance grades for graded ranking losses come from the within-list rank of a response: 4 for the top 5% of a
donor's list, 3 for the next 10%, 2 for the next 15%, 1 for the next 20%, 0 for the bottom half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = [
    "CPRA_POINTS",
    "FEATURE_NAMES",
    "LONGEVITY_TIER",
    "OrganMatchingData",
    "cpra_points",
    "grade_within_lists",
    "kas_points",
    "pre_kas_points",
    "simulate_organ_matching",
    "top_n_relevant",
]

#: Column names of :attr:`OrganMatchingData.features` (one row per donor–candidate pair).
FEATURE_NAMES = (
    "patient_age",
    "patient_diabetes",
    "dialysis_years",
    "listing_years",
    "prior_transplant",
    "prior_living_donor",
    "cpra",
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

#: KAS's CPRA sliding scale (OPTN policy 8): ``(lowest CPRA percent of the band, points)``, bands up to the next.
CPRA_POINTS = (
    (0, 0.0),
    (20, 0.08),
    (30, 0.21),
    (40, 0.34),
    (50, 0.48),
    (60, 0.81),
    (70, 1.09),
    (75, 1.58),
    (80, 2.46),
    (85, 4.05),
    (90, 6.71),
    (95, 10.82),
    (96, 12.17),
    (97, 17.30),
    (98, 24.40),
    (99, 50.09),
    (100, 202.10),
)
#: Points that put longevity-matched candidates (EPTS ≤ 20% for a KDPI ≤ 20% donor) ahead of the rest of the list
#: (KAS offers them such kidneys first; a tier, not points, in the policy; library's encoding).
LONGEVITY_TIER = 100.0

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
        current_score: ``[D, L]`` the existing first-principles score (pre-KAS points), larger first.
        response: ``[D, L]`` the noise-free KAS response (KAS points), larger = offered first.
        observed_response: ``[D, L]`` the response plus noise (only meaningful where ``observed``).
        observed: ``[D]`` bool, the donors of the historical sample whose responses were recorded.
        feature_names: the names of the feature columns.
    """

    features: Tensor
    current_score: Tensor
    response: Tensor
    observed_response: Tensor
    observed: Tensor
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @property
    def n_donors(self) -> int:
        return int(self.features.shape[0])

    @property
    def list_size(self) -> int:
        return int(self.features.shape[1])

    def column(self, name: str) -> Tensor:
        """The ``[D, L]`` feature column called ``name``."""
        if name not in self.feature_names:
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(self.feature_names)}")
        return self.features[..., self.feature_names.index(name)]


def cpra_points(cpra: NDArray[np.float64]) -> NDArray[np.float64]:
    """KAS's sliding-scale points of a CPRA in ``[0, 1]`` (the band of its whole percent, :data:`CPRA_POINTS`)."""
    percent = np.floor(np.asarray(cpra, dtype=np.float64) * 100 + 1e-9)
    lows = np.array([low for low, _ in CPRA_POINTS])
    points = np.array([p for _, p in CPRA_POINTS])
    return points[np.searchsorted(lows, percent, side="right") - 1]


def _dr_points(mismatch_dr: NDArray[np.float64]) -> NDArray[np.float64]:
    return 2.0 * (mismatch_dr == 0) + 1.0 * (mismatch_dr == 1)


def kas_points(columns: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """The KAS response of every donor–candidate pair from its feature columns (see the module docstring)."""
    waiting = np.maximum(columns["listing_years"], columns["dialysis_years"])
    longevity = (columns["kdpi"] <= 0.2) & (columns["epts"] <= 0.2)
    return (
        waiting
        + cpra_points(columns["cpra"])
        + _dr_points(columns["mismatch_dr"])
        + 4.0 * columns["prior_living_donor"]
        + LONGEVITY_TIER * longevity
    )


def pre_kas_points(columns: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """The existing score: the UNOS point system before KAS (see the module docstring)."""
    return (
        columns["listing_years"]
        + 4.0 * (columns["cpra"] >= 0.8)
        + _dr_points(columns["mismatch_dr"])
        + 4.0 * columns["prior_living_donor"]
    )


def _percentile(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Percentile rank in ``[0, 1]`` of every entry among all entries (ties broken by position)."""
    flat = values.ravel()
    order = flat.argsort(kind="stable")
    ranks = np.empty_like(flat)
    ranks[order] = np.arange(flat.size, dtype=flat.dtype)
    return (ranks / max(flat.size - 1, 1)).reshape(values.shape)


def _hla(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, NDArray[np.int64]]:
    """Two antigens per locus, shape ``shape + (2,)``, from Zipf-like allele frequencies."""
    typed = {}
    for locus, n in _ALLELES.items():
        p = 1.0 / np.arange(1, n + 1)
        typed[locus] = rng.choice(n, size=(*shape, 2), p=p / p.sum())
    return typed


def _mismatches(donor: NDArray[np.int64], patient: NDArray[np.int64]) -> NDArray[np.int64]:
    """Distinct donor antigens ``[D, 1, 2]`` absent from the patient ``[D, L, 2]``: ``[D, L]`` in ``{0, 1, 2}``."""
    present = (donor[..., :, None] == patient[..., None, :]).any(-1)  # [D, L, 2]
    duplicate = donor[..., 0] == donor[..., 1]  # a homozygous donor antigen counts once
    missing = (~present).astype(np.int64)
    return missing[..., 0] + missing[..., 1] * (~duplicate)


def _donors(rng: np.random.Generator, d: int) -> dict[str, NDArray[np.float64]]:
    donor = {
        "donor_age": rng.uniform(18, 75, d),
        "donor_height": rng.normal(170, 10, d),
        "donor_weight": np.clip(rng.normal(80, 15, d), 40, 150),
        "donor_hypertension": (rng.random(d) < 0.3).astype(np.float64),
        "donor_diabetes": (rng.random(d) < 0.08).astype(np.float64),
        "donor_creatinine": rng.lognormal(0.0, 0.35, d),
        "donor_stroke": (rng.random(d) < 0.3).astype(np.float64),
        "donor_dcd": (rng.random(d) < 0.2).astype(np.float64),
    }
    kdri = (
        0.0128 * (donor["donor_age"] - 40)
        + 0.0107 * np.maximum(donor["donor_age"] - 50, 0)
        - 0.0464 * (donor["donor_height"] - 170) / 10
        - 0.0199 * np.minimum(donor["donor_weight"] - 80, 0) / 5
        + 0.126 * donor["donor_hypertension"]
        + 0.130 * donor["donor_diabetes"]
        + 0.088 * donor["donor_stroke"]
        + 0.220 * (donor["donor_creatinine"] - 1)
        - 0.209 * np.maximum(donor["donor_creatinine"] - 1.5, 0)
        + 0.133 * donor["donor_dcd"]
    )
    donor["kdpi"] = _percentile(kdri)
    return donor


def _candidates(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, NDArray[np.float64]]:
    age = rng.uniform(18, 75, shape)
    dm = rng.random(shape) < 0.3
    dialysis = rng.gamma(2.0, 1.2, shape) * (rng.random(shape) >= 0.1)
    prior = rng.random(shape) < 0.12
    cpra = np.where(rng.random(shape) < 0.55, 0.0, rng.random(shape) ** 0.7)
    older, log_dial, no_dial = np.maximum(age - 25, 0), np.log(dialysis + 1), dialysis == 0
    epts_raw = (
        0.047 * older
        - 0.015 * dm * older
        + 0.398 * prior
        - 0.237 * dm * prior
        + 0.315 * log_dial
        - 0.099 * dm * log_dial
        + 0.130 * no_dial
        - 0.348 * dm * no_dial
        + 1.262 * dm
    )
    return {
        "patient_age": age,
        "patient_diabetes": dm.astype(np.float64),
        "dialysis_years": dialysis,
        "listing_years": rng.gamma(2.0, 1.5, shape),
        "prior_transplant": prior.astype(np.float64),
        "prior_living_donor": (rng.random(shape) < 0.02).astype(np.float64),
        "cpra": cpra,
        "patient_weight": np.clip(rng.normal(80, 15, shape), 40, 150),
        "epts": _percentile(epts_raw),
    }


def simulate_organ_matching(
    n_donors: int = 400,
    list_size: int = 50,
    *,
    observed_fraction: float = 0.5,
    response_noise: float = 1.0,
    seed: int = 0,
) -> OrganMatchingData:
    """Generate donors, candidate lists, the existing score and the KAS response (see the module docstring).

    Args:
        n_donors: number of donors ``D`` (one candidate list each).
        list_size: candidates per donor ``L``.
        observed_fraction: share of donors whose responses form the historical (training) sample.
        response_noise: standard deviation (in KAS points) of the noise on the recorded responses.
        seed: seed of the generator; equal seeds give equal data.
    """
    if n_donors < 1 or list_size < 1:
        raise ValueError(f"n_donors and list_size must be >= 1, got {n_donors} and {list_size}")
    if not 0.0 <= observed_fraction <= 1.0:
        raise ValueError(f"observed_fraction must be in [0, 1], got {observed_fraction}")
    if response_noise < 0:
        raise ValueError(f"response_noise must be >= 0, got {response_noise}")
    rng = np.random.default_rng(seed)
    shape = (n_donors, list_size)
    donor = _donors(rng, n_donors)
    d_abo = rng.choice(4, size=n_donors, p=_ABO_P)
    columns = _candidates(rng, shape)
    compatible_p = _COMPATIBLE[d_abo] * _ABO_P  # [D, 4]
    compatible_p /= compatible_p.sum(1, keepdims=True)
    p_abo = np.minimum((rng.random(shape)[..., None] > compatible_p.cumsum(1)[:, None, :]).sum(-1), 3)
    donor_hla, patient_hla = _hla(rng, (n_donors, 1)), _hla(rng, shape)
    for locus in _ALLELES:
        columns[f"mismatch_{locus.lower()}"] = _mismatches(donor_hla[locus], patient_hla[locus]).astype(np.float64)
    columns["abo_identical"] = (p_abo == d_abo[:, None]).astype(np.float64)
    columns.update({name: np.broadcast_to(value[:, None], shape) for name, value in donor.items()})

    response = kas_points(columns)
    observed_response = response + rng.normal(0, response_noise, shape)
    observed = np.zeros(n_donors, dtype=bool)
    observed[rng.permutation(n_donors)[: round(observed_fraction * n_donors)]] = True
    features = np.stack([np.asarray(columns[name], dtype=np.float32) for name in FEATURE_NAMES], axis=-1)
    return OrganMatchingData(
        features=torch.from_numpy(features),
        current_score=torch.from_numpy(pre_kas_points(columns).astype(np.float32)),
        response=torch.from_numpy(response.astype(np.float32)),
        observed_response=torch.from_numpy(observed_response.astype(np.float32)),
        observed=torch.from_numpy(observed),
    )


def grade_within_lists(response: Tensor) -> Tensor:
    """Graded relevance ``[D, L]`` in ``{0..4}`` from each list's rank quantiles of ``response`` (larger = better).

    An item whose response is above the ``q`` within-list quantile gets one grade per cut ``q`` in
    ``(0.5, 0.7, 0.85, 0.95)``: the top 5% get 4, the bottom half 0.
    """
    n = response.shape[-1]
    ranks = response.argsort(-1).argsort(-1).to(torch.float64)  # 0 = worst
    quantile = (ranks + 0.5) / n
    grade = torch.zeros_like(response, dtype=torch.long)
    for cut in _GRADE_CUTS:
        grade += (quantile > cut).long()
    return grade


def top_n_relevant(response: Tensor, n: int) -> Tensor:
    """Boolean ``[D, L]``: the ``n`` best candidates of each list by ``response`` (the ground-truth top-N set)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(n, response.shape[-1])
    index = response.topk(n, dim=-1).indices
    return torch.zeros_like(response, dtype=torch.bool).scatter_(-1, index, True)
