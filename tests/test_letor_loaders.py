"""The LETOR (svmlight with qid) reader and the CTR log loader, on files the tests write."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pairloss.data import iter_letor, load_ctr_log, load_letor

LETOR = """\
2 qid:10 1:0.5 3:1.25 # doc a
0 qid:10 2:-1 3:0.0
1 qid:10 1:3

# a comment line
0 qid:7 1:1 2:2 3:3 4:4
4 qid:7 4:0.5
1 qid:99
"""


def test_letor_reads_queries_in_order(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(LETOR)
    queries = list(iter_letor(path))
    assert [q.qid for q in queries] == ["10", "7", "99"]
    np.testing.assert_array_equal(queries[0].relevance, [2, 0, 1])
    np.testing.assert_array_equal(queries[0].features, [[0.5, 0, 1.25], [0, -1, 0], [3, 0, 0]])
    assert queries[2].features.shape == (1, 0)
    data = load_letor(path)
    assert data.features.shape == (6, 4)
    np.testing.assert_array_equal(data.group, [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(data.features[3], [1, 2, 3, 4])
    np.testing.assert_array_equal(data.features[0], [0.5, 0, 1.25, 0])
    assert data.qids == ["10", "7", "99"]


def test_letor_fixed_width_zero_based_and_gzip(tmp_path):
    path = tmp_path / "train.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("1 qid:1 0:2 2:5\n0 qid:1 1:1\n")
    data = load_letor(path, n_features=4, zero_based=True)
    np.testing.assert_array_equal(data.features, [[2, 0, 5, 0], [0, 1, 0, 0]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 qid:1 1:1\n0 qid:2 1:1\n2 qid:1 1:3\n", r"train.txt:3: qid 1 appears again"),
        ("1 qid:1 3:1 2:4\n", r"train.txt:1: feature indices must be strictly increasing"),
        ("1 qid:1 2:1 2:4\n", r"train.txt:1: feature indices must be strictly increasing"),
        ("1 qid:1 1:1\nx qid:1 1:1\n", r"train.txt:2: relevance 'x' is not a number"),
        ("1 1:1\n", r"train.txt:1: expected 'qid:<id>'"),
        ("1 qid:1 1=0.3\n", r"train.txt:1: malformed feature"),
        ("1 qid:1 a:0.3\n", r"train.txt:1: malformed feature"),
        ("1 qid:1 0:0.3\n", r"train.txt:1: feature index 0 is below 1"),
        ("1 qid:1 1:nan\n", r"train.txt:1: feature 1 has a non-finite value"),
        ("-1 qid:1 1:1\n", r"train.txt:1: relevance must be a finite number >= 0"),
        ("1 qid:1 9:1\n", r"train.txt:1: feature index 9 exceeds n_features=4"),
    ],
)
def test_letor_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_letor(path, n_features=4)


def test_letor_streams_before_reaching_a_bad_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("1 qid:1 1:1\n0 qid:1 1:2\n1 qid:2 1:1\nbad\n")
    stream = iter_letor(path)
    first = next(stream)
    assert first.qid == "1" and len(first.relevance) == 2
    with pytest.raises(ValueError, match=r"train\.txt:4"):
        next(stream)


def test_ctr_csv(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("request_id,f1,f2,click\nr1,0.5,1,0\nr2,1.5,2,1\nr1,2,3,1\n")
    table = load_ctr_log(path)
    np.testing.assert_array_equal(table.request, [0, 1, 0])
    np.testing.assert_array_equal(table.click, [0, 1, 1])
    np.testing.assert_array_equal(table.features, [[0.5, 1], [1.5, 2], [2, 3]])
    assert table.feature_names == ["f1", "f2"] and table.request_ids == ["r1", "r2"]
    only = load_ctr_log(path, feature_cols=["f2"])
    np.testing.assert_array_equal(only.features[:, 0], [1, 2, 3])


def test_ctr_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"req": [3, 3, 8], "x": [0.1, 0.2, 0.3], "clicked": [1, 0, 0]}), path)
    table = load_ctr_log(path, request_col="req", click_col="clicked")
    np.testing.assert_array_equal(table.request, [0, 0, 1])
    np.testing.assert_allclose(table.features[:, 0], [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("request_id,f1,click\nr1,0.5,2\n", r"log.csv:2: click must be 0 or 1"),
        ("request_id,f1,click\nr1,0.5,1\nr1,abc,0\n", r"log.csv:3: feature 'f1' is not a number"),
        ("request_id,f1,click\nr1,inf,1\n", r"log.csv:2: feature 'f1' is not finite"),
        ("request_id,f1,click\nr1,0.5\n", r"log.csv:2: 2 fields"),
        ("rid,f1,click\nr1,0.5,1\n", r"no column 'request_id'"),
        ("", r"empty file"),
    ],
)
def test_ctr_errors(tmp_path, text, message):
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_ctr_log(path)
