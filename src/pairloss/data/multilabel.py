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

import math
import re
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.datasets import load_svmlight_file

from pairloss.data._text import read_lines

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
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{xml_path}: not a valid Mulan XML label file ({error})") from None
    except OSError as error:
        raise ValueError(f"{xml_path}: cannot read the Mulan XML label file ({error.strerror})") from None
    labels = [el for el in root.iter() if el.tag.split("}")[-1] == "label"]
    unnamed = [k for k, el in enumerate(labels) if not el.attrib.get("name")]
    if unnamed:
        raise ValueError(f"{xml_path}: <label> element number {unnamed[0] + 1} has no name attribute")
    if not labels:
        raise ValueError(f"{xml_path}: no <label name=...> element")
    return [el.attrib["name"] for el in labels]


@dataclass(frozen=True)
class _Attribute:
    name: str
    nominal: list[str] | None  # the declared values of a nominal attribute, None for a numeric one


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


def _split_name(rest: str, where: str) -> tuple[str, str]:
    """``name rest`` from the text after ``@attribute`` (a quoted name may contain spaces)."""
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        if end < 0:
            raise ValueError(f"{where}: unbalanced quote in the attribute name {rest!r}")
        return rest[1:end], rest[end + 1 :].strip()
    name, _, kind = rest.replace("\t", " ").partition(" ")
    return name, kind.strip()


def _parse_attribute(line: str, where: str) -> _Attribute:
    name, kind = _split_name(line[len("@attribute") :].strip(), where)
    if not name or not kind:
        raise ValueError(f"{where}: expected '@attribute <name> <type>', got {line!r}")
    if kind.startswith("{"):
        if not kind.endswith("}"):
            raise ValueError(f"{where}: the nominal values of {name!r} are not closed by '}}': {kind!r}")
        return _Attribute(name, [_unquote(v.strip()) for v in kind[1:-1].split(",")])
    if kind.split()[0].lower() in ("numeric", "real", "integer"):
        return _Attribute(name, None)
    raise ValueError(f"{where}: attribute {name!r} has type {kind!r}; only numeric and nominal attributes are read")


def _parse_value(token: str, attribute: _Attribute, where: str) -> float:
    token = _unquote(token.strip())
    if token == "?":
        raise ValueError(f"{where}: missing value '?' for attribute {attribute.name!r} is not supported")
    if attribute.nominal is not None:
        if token not in attribute.nominal:
            raise ValueError(
                f"{where}: value {token!r} of nominal attribute {attribute.name!r} is not one of {attribute.nominal}"
            )
        try:
            return float(token)
        except ValueError:
            return float(attribute.nominal.index(token))
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{where}: value {token!r} of numeric attribute {attribute.name!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: value {token!r} of attribute {attribute.name!r} is not finite")
    return value


def _parse_sparse_row(line: str, attributes: list[_Attribute], where: str) -> list[tuple[int, float]]:
    if not line.endswith("}"):
        raise ValueError(f"{where}: a sparse row must end with '}}'")
    pairs: list[tuple[int, float]] = []
    for entry in (e.strip() for e in line[1:-1].split(",")):
        if not entry:
            continue
        index, _, text = entry.partition(" ")
        try:
            j = int(index)
        except ValueError:
            raise ValueError(
                f"{where}: sparse entry {entry!r} must be '<index> <value>' with an integer index"
            ) from None
        if not 0 <= j < len(attributes):
            raise ValueError(f"{where}: sparse index {j} out of range for {len(attributes)} attributes")
        if any(j == seen for seen, _ in pairs):
            raise ValueError(f"{where}: sparse index {j} appears twice")
        if not text.strip():
            raise ValueError(f"{where}: sparse entry {entry!r} has no value")
        pairs.append((j, _parse_value(text, attributes[j], where)))
    return pairs


def _parse_dense_row(line: str, attributes: list[_Attribute], where: str) -> list[float]:
    values = line.split(",")
    if len(values) != len(attributes):
        raise ValueError(f"{where}: a data row has {len(values)} values but there are {len(attributes)} attributes")
    return [_parse_value(v, attribute, where) for v, attribute in zip(values, attributes, strict=True)]


def load_arff(
    path: str | Path,
    *,
    n_labels: int | None = None,
    labels_first: bool = False,
    label_names: list[str] | None = None,
    encoding: str = "utf-8",
) -> MultiLabelData:
    """Read a Mulan or MEKA multi-label ARFF file (dense rows or sparse ``{index value, ...}`` rows).

    Args:
        path: the ``.arff`` file (``.arff.gz`` is read transparently).
        n_labels: how many attributes are labels (when neither ``label_names`` nor MEKA's ``-C`` says).
        labels_first: with ``n_labels``, the labels are the first attributes (MEKA) instead of the last (Mulan).
        label_names: the label attributes by name (from Mulan's XML file).
        encoding: the file's text encoding.

    Raises:
        ValueError: naming the file and line, on a malformed header or row, a missing value, a value outside a
            nominal attribute's set, a label value other than 0/1, bytes that are not ``encoding`` text, a file
            without ``@data`` or without rows; and when the label attributes cannot be determined.
    """
    path = Path(path)
    attributes: list[_Attribute] = []
    relation = ""
    rows: list[tuple[int, list[tuple[int, float]]]] = []  # (line, (attribute index, value) pairs)
    in_data = False
    for lineno, raw in read_lines(path, encoding):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        where = f"{path}:{lineno}"
        if in_data:
            if line.startswith("{"):
                rows.append((lineno, _parse_sparse_row(line, attributes, where)))
            else:
                rows.append((lineno, list(enumerate(_parse_dense_row(line, attributes, where)))))
            continue
        keyword = line.split(maxsplit=1)[0].lower()
        if keyword == "@relation":
            relation = _unquote(line[len("@relation") :].strip())
        elif keyword == "@attribute":
            attributes.append(_parse_attribute(line, where))
            if attributes[-1].name in [a.name for a in attributes[:-1]]:
                raise ValueError(f"{where}: attribute {attributes[-1].name!r} is declared twice")
        elif keyword == "@data":
            if not attributes:
                raise ValueError(f"{where}: @data before any @attribute")
            in_data = True
        else:
            raise ValueError(f"{where}: expected @relation, @attribute or @data in the header, got {line[:40]!r}")
    if not in_data:
        raise ValueError(f"{path}: no @data section" + ("" if attributes else " and no @attribute"))
    if not rows:
        raise ValueError(f"{path}: no data rows after @data")
    names = [a.name for a in attributes]
    table = np.zeros((len(rows), len(names)), dtype=np.float64)
    for i, (_, pairs) in enumerate(rows):
        for j, value in pairs:
            table[i, j] = value
    try:
        label_columns = _label_columns(names, relation, n_labels, labels_first, label_names)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    labels = table[:, label_columns]
    bad = np.flatnonzero(~np.isin(labels, (0, 1)).all(1))
    if bad.size:
        row = int(bad[0])
        column = label_columns[int(np.flatnonzero(~np.isin(labels[row], (0, 1)))[0])]
        raise ValueError(
            f"{path}:{rows[row][0]}: label attribute {names[column]!r} is {table[row, column]:g}; "
            "labels must hold only 0 and 1"
        )
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


def _svmlight_problem(line: str) -> tuple[str | None, int]:
    """What is wrong with one multi-label svmlight line (None when nothing), and its largest feature index."""
    body = line.split("#", 1)[0]
    tokens = body.split()
    if not tokens:
        return None, -1
    if body[:1].isspace():  # a line without labels starts with white space
        features = tokens
    else:
        for label in tokens[0].split(","):
            try:
                float(label)
            except ValueError:
                return f"label {label!r} is not a number", -1
        features = tokens[1:]
    previous = -1
    for token in features:
        key, sep, value = token.partition(":")
        if key == "qid":
            continue
        try:
            index, _ = int(key), float(value)
        except ValueError:
            return f"malformed feature {token!r} (expected <index>:<value>)", previous
        if not sep:
            return f"malformed feature {token!r} (expected <index>:<value>)", previous
        if index < 0:
            return f"feature index {index} is negative", previous
        if index <= previous:
            return f"feature indices must be strictly increasing, {index} follows {previous}", previous
        previous = index
    return None, previous


def _where_svmlight_fails(path: Path) -> str:
    """``path:line`` of the first line scikit-learn's parser rejects, else of the largest feature index, else the
    path (scikit-learn's messages name neither)."""
    widest, widest_line = -1, 0
    for lineno, line in read_lines(path, "latin-1"):  # bytes that are not UTF-8 are found as bad numbers
        problem, largest = _svmlight_problem(line)
        if problem is not None:
            return f"{path}:{lineno}: {problem}"
        if largest > widest:
            widest, widest_line = largest, lineno
    return f"{path}:{widest_line}" if widest_line else str(path)


def _data_lines(path: Path) -> list[int]:
    """The line number of each data row (lines with something before any ``#`` comment)."""
    return [n for n, line in read_lines(path, "latin-1") if line.split("#", 1)[0].strip()]


def load_svmlight_multilabel(
    path: str | Path, *, n_labels: int | None = None, n_features: int | None = None
) -> MultiLabelData:
    """Read the multi-label svmlight/LIBSVM format: ``2,5 1:0.3 7:1.2`` (labels, then ``index:value`` pairs).

    Label ids are integers; column ``j`` of ``labels`` is label id ``j`` when ``n_labels`` is given, otherwise the
    sorted distinct ids found in the file (``label_names``). A line may have no label. Features come back as a CSR
    matrix (``zero_based="auto"`` as in scikit-learn, whose parser reads the file). Malformed lines, label ids that
    are not integers ``>= 0`` (or ``< n_labels``), non-finite values and a truncated ``.gz`` raise ``ValueError``
    naming the file and the line; so does a file without data lines.
    """
    path = Path(path)
    for name, value in (("n_labels", n_labels), ("n_features", n_features)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        features, targets = load_svmlight_file(str(path), multilabel=True, n_features=n_features)
    except (ValueError, EOFError, OSError, zlib.error) as error:  # the parser's messages name no file or line
        raise ValueError(f"{_where_svmlight_fails(path)} ({error})") from None
    if features.shape[0] == 0:
        raise ValueError(f"{path}: no data lines ('<labels> <index>:<value> ...') in the file")

    def fail(row: int, problem: str) -> ValueError:
        return ValueError(f"{path}:{_data_lines(path)[row]}: {problem}")

    bad_value = np.flatnonzero(~np.isfinite(features.data))
    if bad_value.size:
        row = int(np.searchsorted(features.indptr, bad_value[0], side="right") - 1)
        raise fail(row, f"feature value {features.data[bad_value[0]]} is not finite")
    ids: list[list[int]] = []
    for i, row_targets in enumerate(targets):
        if any(float(t) != int(t) or t < 0 for t in row_targets):
            raise fail(i, f"label ids must be integers >= 0, got {list(row_targets)}")
        ids.append([int(t) for t in row_targets])
    classes = list(range(n_labels)) if n_labels is not None else sorted({t for row in ids for t in row})
    position = {label: j for j, label in enumerate(classes)}
    labels = np.zeros((len(ids), len(classes)), dtype=np.uint8)
    for i, row_ids in enumerate(ids):
        for label in row_ids:
            if label not in position:
                raise fail(i, f"label id {label} outside [0, {n_labels}) (n_labels={n_labels})")
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
