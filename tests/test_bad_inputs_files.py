"""Bad files: every loader names the file and the line of the problem, never a bare decode or parser error.

Each case writes a small broken file (malformed rows, bytes that are not UTF-8, truncated ``.gz``, empty files) and
checks the ``ValueError``'s message for the file name, the line and what is wrong.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pairloss.data import iter_letor, load_arff, load_ctr_log, load_letor, load_svmlight_multilabel, mulan_label_names
from pairloss.models import SmallCNN, load_weights

NOT_UTF8 = b"\xff\xfe"

# ------------------------------------------------------------------------------------------ every text loader

#: (loader, file name, valid content, a line number to corrupt): each text loader on a good file.
TEXT_LOADERS: dict[str, tuple[Callable[[Path], Any], str, bytes, int]] = {
    "letor": (load_letor, "train.txt", b"1 qid:1 1:0.5\n0 qid:1 1:0.25 # doc\n2 qid:2 2:1\n", 2),
    "ctr": (load_ctr_log, "log.csv", b"request_id,f1,click\nr1,0.5,1\nr1,0.25,0\nr2,1,0\n", 3),
    "arff": (
        lambda p: load_arff(p, n_labels=1),
        "data.arff",
        b"@relation r\n@attribute a numeric\n@attribute l {0,1}\n@data\n0.5,1\n0.25,0\n",
        6,
    ),
    "svmlight": (load_svmlight_multilabel, "data.svm", b"0,1 1:0.5\n1 2:0.25\n2 1:1\n", 2),
}


@pytest.mark.parametrize("kind", TEXT_LOADERS)
def test_the_valid_file_loads(tmp_path: Path, kind: str) -> None:
    load, name, content, _ = TEXT_LOADERS[kind]
    path = tmp_path / name
    path.write_bytes(content)
    load(path)


@pytest.mark.parametrize("kind", TEXT_LOADERS)
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path, kind: str) -> None:
    load, name, content, line = TEXT_LOADERS[kind]
    lines = content.split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"0.25", b"0.2" + NOT_UTF8)
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=rf"{name}:{line}: "):
        load(path)


@pytest.mark.parametrize("kind", ["letor", "ctr", "arff"])
def test_utf8_in_names_and_comments_is_read(tmp_path: Path, kind: str) -> None:
    load, name, content, _ = TEXT_LOADERS[kind]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.replace(b"0.5", b"0.5" if kind == "ctr" else b"0.5 ") + b"\n")
    load(path)  # a byte-order mark at the start is skipped


@pytest.mark.parametrize(
    ("kind", "head", "row"),
    [("letor", b"", b"1 qid:1 1:0.5\n"), ("arff", TEXT_LOADERS["arff"][2], b"0.5,1\n"), ("svmlight", b"", b"1 1:2\n")],
)
def test_a_truncated_gzip_file_is_named(tmp_path: Path, kind: str, head: bytes, row: bytes) -> None:
    load, name, _, _ = TEXT_LOADERS[kind]
    path = tmp_path / (name + ".gz")
    path.write_bytes(gzip.compress(head + row * 200)[:-12])
    with pytest.raises(ValueError, match=rf"{name}\.gz.*(truncated|corrupt|ended)"):
        load(path)


@pytest.mark.parametrize("kind", TEXT_LOADERS)
def test_an_empty_file_is_an_error(tmp_path: Path, kind: str) -> None:
    load, name, _, _ = TEXT_LOADERS[kind]
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=name):
        load(path)


@pytest.mark.parametrize("kind", TEXT_LOADERS)
def test_a_missing_file_is_named(tmp_path: Path, kind: str) -> None:
    load, name, _, _ = TEXT_LOADERS[kind]
    with pytest.raises((ValueError, FileNotFoundError), match=name):
        load(tmp_path / name)


def test_another_encoding_is_read_when_given(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes("request_id,f\xe9,click\nr1,0.5,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"log\.csv:1: .*encoding"):
        load_ctr_log(path)
    assert load_ctr_log(path, encoding="latin-1").feature_names == ["fé"]
    with pytest.raises(ValueError, match="encoding"):
        load_ctr_log(path, encoding="no-such-codec")


# ---------------------------------------------------------------------------------------------------- LETOR


def test_a_letor_file_with_only_comments_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match=r"train\.txt: no document lines"):
        list(iter_letor(path))


@pytest.mark.parametrize("n_features", [0, -3, 2.5, True])
def test_letor_n_features_must_be_a_positive_int(tmp_path: Path, n_features: Any) -> None:
    path = tmp_path / "train.txt"
    path.write_text("1 qid:1 1:0.5\n")
    with pytest.raises(ValueError, match="n_features"):
        load_letor(path, n_features=n_features)


# ------------------------------------------------------------------------------------------------------ CTR


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("request_id,click,f\n", r"log\.csv: no impressions"),
        ("request_id,click,f,f\nr1,1,0.5,0.5\n", r"log\.csv:1: repeated column"),
        ('request_id,click,f\nr1,1,"0.5\n', r"log\.csv:\d+: (malformed CSV|2 fields)"),
        ("request_id,click,f\nr1,1,0.5\n\nr2,0,x\n", r"log\.csv:4: feature 'f' is not a number"),
        ('request_id,click,f\n"r\n1",1,0.5\nr2,0,x\n', r"log\.csv:4: feature 'f' is not a number"),
    ],
)
def test_ctr_csv_problems_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_ctr_log(path)


def test_a_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "log.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match=r"log\.parquet: not a readable Parquet file"):
        load_ctr_log(path)


# ----------------------------------------------------------------------------------------------------- ARFF

ARFF_HEAD = "@relation r\n@attribute a numeric\n@attribute l {0,1}\n@data\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ARFF_HEAD + "1,1\n0.5\n", r"bad\.arff:6: a data row has 1 values but there are 2 attributes"),
        (ARFF_HEAD + "1,1\nzz,0\n", r"bad\.arff:6: value 'zz' of numeric attribute 'a' is not a number"),
        (ARFF_HEAD + "?,1\n", r"bad\.arff:5: missing value '\?' for attribute 'a'"),
        (ARFF_HEAD + "nan,1\n", r"bad\.arff:5: value 'nan' of attribute 'a' is not finite"),
        (ARFF_HEAD + "1,2\n", r"bad\.arff:5: value '2' of nominal attribute 'l' is not one of"),
        (ARFF_HEAD + "{0 1, 7 1}\n", r"bad\.arff:5: sparse index 7 out of range for 2 attributes"),
        (ARFF_HEAD + "{x 0.1}\n", r"bad\.arff:5: sparse entry 'x 0.1' must be '<index> <value>'"),
        (ARFF_HEAD + "{0 1, 0 2}\n", r"bad\.arff:5: sparse index 0 appears twice"),
        (ARFF_HEAD + "{0 1\n", r"bad\.arff:5: a sparse row must end with '}'"),
        (ARFF_HEAD + "{1}\n", r"bad\.arff:5: sparse entry '1' has no value"),
        (
            "@relation r\n@attribute\n@attribute l {0,1}\n@data\n1\n",
            r"bad\.arff:2: expected '@attribute <name> <type>'",
        ),
        ("@relation r\n@attribute 'a numeric\n@data\n", r"bad\.arff:2: unbalanced quote"),
        ("@relation r\n@attribute a {0,1\n@data\n", r"bad\.arff:2: the nominal values of 'a' are not closed"),
        ("@relation r\n@attribute a string\n@data\n", r"bad\.arff:2: attribute 'a' has type 'string'"),
        ("@relation r\n@attribute a numeric\n@attribute a {0,1}\n@data\n", r"bad\.arff:3: attribute 'a' is declared"),
        ("@relation r\n@attribute a numeric\n@attribute l {0,1}\n1,1\n", r"bad\.arff:4: expected @relation"),
        ("@relation r\n@attribute a numeric\n@attribute l {0,1}\n", r"bad\.arff: no @data section"),
        ("@relation r\n@data\n1,1\n", r"bad\.arff:2: @data before any @attribute"),
        (ARFF_HEAD, r"bad\.arff: no data rows after @data"),
        ("@relation r\n@attribute a numeric\n@attribute l numeric\n@data\n1,0\n1,3\n", r"bad\.arff:6: label attr"),
    ],
)
def test_arff_problems_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.arff"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_arff(path, n_labels=1)


def test_arff_label_choice_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.arff"
    path.write_text(ARFF_HEAD + "1,1\n")
    with pytest.raises(ValueError, match=r"bad\.arff: give n_labels"):
        load_arff(path)
    with pytest.raises(ValueError, match=r"bad\.arff: label attributes not in the file"):
        load_arff(path, label_names=["nope"])


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<labels><label name='a'>", r"labels\.xml: not a valid Mulan XML"),
        ("<labels><label/></labels>", r"labels\.xml: <label> element number 1 has no name"),
        ("<labels></labels>", r"labels\.xml: no <label"),
    ],
)
def test_mulan_xml_problems_name_the_file(tmp_path: Path, xml: str, message: str) -> None:
    path = tmp_path / "labels.xml"
    path.write_text(xml)
    with pytest.raises(ValueError, match=message):
        mulan_label_names(path)


# ------------------------------------------------------------------------------------------------- svmlight


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("1,2 1:0.5\n1 2:x\n", {}, r"data\.svm:2: malformed feature '2:x'"),
        ("1,a 1:0.5\n", {}, r"data\.svm:1: label 'a' is not a number"),
        ("1 1:0.5\n1 2:0.5 1:0.3\n", {}, r"data\.svm:2: feature indices must be strictly increasing"),
        ("1 1:0.5\n\n1 -1:0.5\n", {}, r"data\.svm:3: feature index -1 is negative"),
        ("1 1:0.5\n1 1\n", {}, r"data\.svm:2: malformed feature '1'"),
        ("1 1:0.5\n# c\n1 1:nan\n", {}, r"data\.svm:3: feature value nan is not finite"),
        ("1 1:0.5\n1.5 1:1\n", {}, r"data\.svm:2: label ids must be integers >= 0"),
        ("1 1:0.5\n-1 1:1\n", {}, r"data\.svm:2: label ids must be integers >= 0"),
        ("1 1:0.5\n4 1:1\n", {"n_labels": 3}, r"data\.svm:2: label id 4 outside \[0, 3\)"),
        ("1 1:0.5\n1 9:1\n1 2:1\n", {"n_features": 3}, r"data\.svm:2 \(n_features was set to 3"),
        ("# only a comment\n", {}, r"data\.svm: no data lines"),
        ("1 1:0.5\n", {"n_labels": 0}, r"n_labels must be a positive int"),
        ("1 1:0.5\n", {"n_features": -1}, r"n_features must be a positive int"),
    ],
)
def test_svmlight_problems_name_file_and_line(tmp_path: Path, text: str, kwargs: dict[str, int], message: str) -> None:
    path = tmp_path / "data.svm"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_svmlight_multilabel(path, **kwargs)


# ---------------------------------------------------------------------------------------------- model weights


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am text", r"junk\.pt is not a readable weights file"),
        ("truncated", r"junk\.pt is not a readable weights file"),
        ("wrong shape", r"junk\.pt have other shapes than the model"),
    ],
)
def test_unreadable_weights_name_the_path(tmp_path: Path, content: bytes | str, message: str) -> None:
    path = tmp_path / "junk.pt"
    model = SmallCNN()
    if content == "truncated":
        torch.save(model.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "wrong shape":
        state = model.state_dict()
        state["features.0.weight"] = torch.zeros(3, 3)
        torch.save(state, path)
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_weights(model, path)


# ---------------------------------------------------------------------------------------- recipe results.json


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "does not hold a results object"),
        ('{"protocol": 1, "name": "toy", "per_seed": {"0": ', "is not valid JSON"),
        ('{"protocol": -1, "name": "toy"}', "another protocol version, recipe, mode or configuration"),
        ("\udcff\udcfe{}", "is not valid JSON"),
    ],
)
def test_the_protocol_sets_aside_a_results_file_it_cannot_resume(tmp_path: Path, content: str, reason: str) -> None:
    from types import SimpleNamespace

    from pairloss.recipes.protocol import _resumable

    path = tmp_path / "results.json"
    raw = content.encode(errors="surrogateescape")
    path.write_bytes(raw)
    with pytest.warns(UserWarning, match=reason):
        assert _resumable(path, SimpleNamespace(name="toy"), {"n": 1}, "quick") is None  # type: ignore[arg-type]
    assert (tmp_path / "results.json.bak").read_bytes() == raw


def test_a_second_replacement_keeps_the_first_backup(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pairloss.recipes.protocol import _resumable

    path = tmp_path / "results.json"
    for n, content in enumerate(["[]", "[1]"]):
        path.write_text(content)
        with pytest.warns(UserWarning):
            _resumable(path, SimpleNamespace(name="toy"), {"n": 1}, "quick")  # type: ignore[arg-type]
        assert (tmp_path / f"results.json.bak{n or ''}").read_text() == content
