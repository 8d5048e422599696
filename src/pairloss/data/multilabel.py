"""Multi-label data: Mulan/MEKA ARFF files, the multi-label svmlight format, and a synthetic generator.

* :func:`load_arff` reads dense and sparse ARFF. Which attributes are labels: explicit ``label_names`` (Mulan's XML
  file, read with :func:`mulan_label_names`), or ``n_labels`` (at the end, Mulan's layout, or at the start with
  ``labels_first=True``), or MEKA's ``-C c`` option in the ``@relation`` name (the first ``c`` attributes; the last
  ``|c|`` when negative).
* :func:`load_svmlight_multilabel` reads ``l1,l2,... idx:val idx:val`` lines (the LIBSVM multi-label data sets)
  with scikit-learn's parser.
* :func:`make_multilabel` draws a well-specified linear problem with ``c`` labels and a known ideal scorer;
  :class:`LinearMultiLabelProblem` is the same kind of problem as a fixed distribution with a set label prevalence,
  from which independent samples are drawn (fresh training sets for a generalisation experiment).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.datasets import load_svmlight_file

__all__ = [
    "LinearMultiLabelProblem",
    "MultiLabelData",
    "load_arff",
    "load_svmlight_multilabel",
    "make_multilabel",
    "mulan_label_names",
]

#: Draws used to set the bias of a :class:`LinearMultiLabelProblem` to its prevalence.
_CALIBRATION_DRAWS = 400_000


@dataclass
class MultiLabelData:
    """Features ``[n, d]`` (dense float32, or CSR for svmlight), multi-hot labels ``[n, c]`` (uint8) and names.

    ``true_scores`` is set by :func:`make_multilabel`: the noiseless scores ``x W* + b*`` that generated the labels.
    """

    features: NDArray[np.float32] | sparse.csr_matrix
    labels: NDArray[np.uint8]
    feature_names: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    true_scores: NDArray[np.float64] | None = None

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[1])


def mulan_label_names(xml_path: str | Path) -> list[str]:
    """The label names listed in a Mulan XML file (``<label name="..."/>`` elements, any namespace)."""
    root = ElementTree.parse(xml_path).getroot()
    return [el.attrib["name"] for el in root.iter() if el.tag.split("}")[-1] == "label"]


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


def _split_attribute(line: str) -> tuple[str, str]:
    rest = line[len("@attribute") :].strip()
    if rest[0] in "'\"":
        end = rest.index(rest[0], 1)
        return rest[1:end], rest[end + 1 :].strip()
    name, _, kind = rest.partition(" ")
    if not kind:
        name, _, kind = rest.partition("\t")
    return name, kind.strip()


def _parse_value(token: str, nominal: list[str] | None, attribute: str) -> float:
    token = _unquote(token.strip())
    if token == "?":
        raise ValueError(f"missing value '?' for attribute {attribute!r} is not supported")
    if nominal is not None and token in nominal:
        try:
            return float(token)
        except ValueError:
            return float(nominal.index(token))
    try:
        return float(token)
    except ValueError as error:
        raise ValueError(f"cannot read value {token!r} of attribute {attribute!r}") from error


def _sparse_row(line: str, names: list[str], nominals: list[list[str] | None]) -> list[tuple[int, float]]:
    pairs = []
    for entry in (e.strip() for e in line.strip("{}").split(",")):
        if not entry:
            continue
        index, _, text = entry.partition(" ")
        try:
            j = int(index)
        except ValueError:
            raise ValueError(f"sparse entry {entry!r} is not '<index> <value>'") from None
        if not 0 <= j < len(names):
            raise ValueError(f"sparse index {j} out of range for {len(names)} attributes")
        pairs.append((j, _parse_value(text, nominals[j], names[j])))
    return pairs


def _dense_row(line: str, names: list[str], nominals: list[list[str] | None]) -> list[float]:
    values = line.split(",")
    if len(values) != len(names):
        raise ValueError(f"a data row has {len(values)} values but there are {len(names)} attributes")
    return [_parse_value(v, nominals[j], names[j]) for j, v in enumerate(values)]


def load_arff(
    path: str | Path,
    *,
    n_labels: int | None = None,
    labels_first: bool = False,
    label_names: list[str] | None = None,
) -> MultiLabelData:
    """Read a Mulan or MEKA multi-label ARFF file (dense rows or sparse ``{index value, ...}`` rows).

    Args:
        path: the ``.arff`` file.
        n_labels: how many attributes are labels (when neither ``label_names`` nor MEKA's ``-C`` says).
        labels_first: with ``n_labels``, the labels are the first attributes (MEKA) instead of the last (Mulan).
        label_names: the label attributes by name (from Mulan's XML file).

    Raises:
        ValueError: on a malformed file, a missing value, a label value other than 0/1, or when the label
            attributes cannot be determined.
    """
    names: list[str] = []
    nominals: list[list[str] | None] = []
    relation = ""
    dense_rows: list[tuple[int, list[float]]] = []
    sparse_rows: list[tuple[int, list[tuple[int, float]]]] = []
    n_rows = 0
    in_data = False
    with open(path, encoding="utf-8") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("%"):
                continue
            lower = line.lower()
            if not in_data:
                if lower.startswith("@relation"):
                    relation = _unquote(line[len("@relation") :].strip())
                elif lower.startswith("@attribute"):
                    name, kind = _split_attribute(line)
                    names.append(name)
                    nominals.append(
                        [_unquote(v.strip()) for v in kind.strip()[1:-1].split(",")] if kind.startswith("{") else None
                    )
                elif lower.startswith("@data"):
                    in_data = True
                continue
            try:
                if line.startswith("{"):
                    sparse_rows.append((n_rows, _sparse_row(line, names, nominals)))
                else:
                    dense_rows.append((n_rows, _dense_row(line, names, nominals)))
            except ValueError as error:
                raise ValueError(f"{path}:{line_number}: {error}") from None
            n_rows += 1
    if not names:
        raise ValueError(f"{path}: no @attribute found")
    table = np.zeros((n_rows, len(names)), dtype=np.float64)
    for i, dense in dense_rows:
        table[i] = dense
    for i, pairs in sparse_rows:
        for j, value in pairs:
            table[i, j] = value
    label_columns = _label_columns(names, relation, n_labels, labels_first, label_names)
    labels = table[:, label_columns]
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("label attributes must hold only 0 and 1")
    feature_columns = [j for j in range(len(names)) if j not in set(label_columns)]
    return MultiLabelData(
        features=table[:, feature_columns].astype(np.float32),
        labels=labels.astype(np.uint8),
        feature_names=[names[j] for j in feature_columns],
        label_names=[names[j] for j in label_columns],
    )


def _label_columns(
    names: list[str], relation: str, n_labels: int | None, labels_first: bool, label_names: list[str] | None
) -> list[int]:
    if label_names is not None:
        missing = [n for n in label_names if n not in names]
        if missing:
            raise ValueError(f"label attributes not in the file: {missing}")
        return [names.index(n) for n in label_names]
    if n_labels is None:
        match = re.search(r"-C\s+(-?\d+)", relation)
        if match is None:
            raise ValueError("give n_labels or label_names: the @relation has no MEKA '-C c' option")
        c = int(match.group(1))
        n_labels, labels_first = abs(c), c > 0
    if not 0 < n_labels < len(names):
        raise ValueError(f"n_labels must be in [1, {len(names) - 1}], got {n_labels}")
    return list(range(n_labels)) if labels_first else list(range(len(names) - n_labels, len(names)))


def load_svmlight_multilabel(
    path: str | Path, *, n_labels: int | None = None, n_features: int | None = None
) -> MultiLabelData:
    """Read the multi-label svmlight/LIBSVM format: ``2,5 1:0.3 7:1.2`` (labels, then ``index:value`` pairs).

    Label ids are integers; column ``j`` of ``labels`` is label id ``j`` when ``n_labels`` is given, otherwise the
    sorted distinct ids found in the file (``label_names``). A line may have no label. Features come back as a CSR
    matrix (``zero_based="auto"`` as in scikit-learn).
    """
    features, targets = load_svmlight_file(str(path), multilabel=True, n_features=n_features)
    ids = [[int(t) for t in row] for row in targets]
    if any(float(t) != int(t) for row in targets for t in row):
        raise ValueError("multi-label ids must be integers")
    classes = list(range(n_labels)) if n_labels is not None else sorted({t for row in ids for t in row})
    position = {label: j for j, label in enumerate(classes)}
    labels = np.zeros((len(ids), len(classes)), dtype=np.uint8)
    for i, row in enumerate(ids):
        for label in row:
            if label not in position:
                raise ValueError(f"label id {label} outside [0, {n_labels})")
            labels[i, position[label]] = 1
    return MultiLabelData(
        features=sparse.csr_matrix(features, dtype=np.float32),
        labels=labels,
        feature_names=[str(j) for j in range(features.shape[1])],
        label_names=[str(c) for c in classes],
    )


def make_multilabel(
    n_samples: int,
    n_labels: int,
    *,
    n_features: int = 32,
    avg_labels: float = 2.0,
    signal: float = 3.0,
    noise: float = 1.0,
    seed: int = 0,
) -> MultiLabelData:
    """A linear multi-label problem with a known ideal scorer.

        x ~ N(0, I_d),   t_j(x) = signal · x·w_j / ‖w_j‖ + b_j,   y_j = 1[t_j(x) + noise · ε_j > 0],

    ``w_j ~ N(0, I_d)``, ``ε_j`` standard logistic, and ``b_j`` set so that each label is relevant with probability
    about ``avg_labels / c`` (the labels get sparser as ``c`` grows, as in real multi-label sets). A row that draws
    no label gets its highest-scored one, so every row has at least one relevant label. ``true_scores`` holds
    ``t(x)``: its ranking is the Bayes-optimal one for the ranking loss, up to the noise.
    """
    if n_samples < 1 or n_labels < 1 or n_features < 1:
        raise ValueError("n_samples, n_labels and n_features must be >= 1")
    if not 0 < avg_labels <= n_labels:
        raise ValueError(f"avg_labels must be in (0, n_labels], got {avg_labels}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    w = rng.standard_normal((n_features, n_labels))
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    logits = signal * x @ w
    eps = rng.logistic(size=logits.shape)
    prevalence = min(avg_labels / n_labels, 0.5)
    bias = -np.quantile(logits + noise * eps, 1 - prevalence, axis=0)
    true_scores = logits + bias
    labels = (true_scores + noise * eps > 0).astype(np.uint8)
    empty = labels.sum(1) == 0
    labels[empty, np.argmax(true_scores[empty], axis=1)] = 1
    return MultiLabelData(
        features=x.astype(np.float32),
        labels=labels,
        feature_names=[f"x{j}" for j in range(n_features)],
        label_names=[f"label{j}" for j in range(n_labels)],
        true_scores=true_scores,
    )


@dataclass(frozen=True)
class LinearMultiLabelProblem:
    """A fixed linear multi-label distribution: draw as many independent samples from it as needed.

        x ~ N(0, I_d),   t_j(x) = signal · x·w_j + b,   y_j = 1[t_j(x) + noise · ε_j > 0]

    with unit columns ``w_j`` (drawn once, from ``seed``), ``ε_j`` standard logistic and one bias ``b`` for all
    labels, set so that every label is relevant with probability ``prevalence``. ``x·w_j ~ N(0, 1)`` for every
    ``j``, so the prevalence does not depend on ``c``: the instance-wise imbalance ``|Y⁻| / |Y⁺|`` is about
    ``(1 − prevalence) / prevalence`` whatever the number of labels, and the two factors can be varied apart.
    Rows may draw no relevant label (they carry no label pair; the ranking loss leaves them out).

    Build it with :meth:`create`; :meth:`sample` draws ``n`` rows with their ideal scores ``t(x)``.
    """

    weights: NDArray[np.float64]
    bias: float
    signal: float
    noise: float
    prevalence: float

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_labels(self) -> int:
        return int(self.weights.shape[1])

    @classmethod
    def create(
        cls,
        n_labels: int,
        *,
        n_features: int = 32,
        prevalence: float = 0.2,
        signal: float = 3.0,
        noise: float = 1.0,
        seed: int = 0,
    ) -> LinearMultiLabelProblem:
        """The problem with ``n_labels`` labels, each relevant with probability ``prevalence``.

        Raises:
            ValueError: on a non-positive size, a prevalence outside ``(0, 1)`` or a negative signal or noise.
        """
        if n_labels < 1 or n_features < 1:
            raise ValueError(f"n_labels and n_features must be >= 1, got {n_labels} and {n_features}")
        if not 0 < prevalence < 1:
            raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
        if signal < 0 or noise < 0 or signal + noise == 0:
            raise ValueError(f"signal and noise must be >= 0 and not both 0, got {signal} and {noise}")
        rng = np.random.default_rng(seed)
        weights = rng.standard_normal((n_features, n_labels))
        weights /= np.linalg.norm(weights, axis=0, keepdims=True)
        calibration = signal * rng.standard_normal(_CALIBRATION_DRAWS) + noise * rng.logistic(size=_CALIBRATION_DRAWS)
        bias = -float(np.quantile(calibration, 1 - prevalence))
        return cls(weights, bias, float(signal), float(noise), float(prevalence))

    def sample(self, n_samples: int, seed: int) -> MultiLabelData:
        """``n_samples`` independent rows (features float32, labels uint8, ``true_scores`` = ``t(x)``)."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n_samples, self.n_features))
        true_scores = self.signal * x @ self.weights + self.bias
        labels = (true_scores + self.noise * rng.logistic(size=true_scores.shape) > 0).astype(np.uint8)
        return MultiLabelData(
            features=x.astype(np.float32),
            labels=labels,
            feature_names=[f"x{j}" for j in range(self.n_features)],
            label_names=[f"label{j}" for j in range(self.n_labels)],
            true_scores=true_scores,
        )
