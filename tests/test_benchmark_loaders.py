"""Loaders of the benchmarks' official layouts: the papers' class splits, and errors that name the file and line."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fake_benchmarks import write_cars, write_cifar10, write_cub, write_inaturalist, write_inshop, write_sop
from pairloss.data.benchmarks import load_retrieval_benchmark
from pairloss.data.cifar import hashing_split, load_cifar10
from pairloss.data.transforms import EvalTransform, TrainTransform


def _names(paths: list[Path]) -> set[str]:
    return {p.parent.name for p in paths}


def test_cub_split_is_classes_1_to_100_for_training(tmp_path: Path) -> None:
    bench = load_retrieval_benchmark("cub200", write_cub(tmp_path))
    assert _names(bench.train.paths) == {"001.Species_1", "002.Species_2", "003.Species_3"}
    assert _names(bench.query.paths) == {"101.Species_101", "102.Species_102", "103.Species_103"}
    assert bench.gallery is None
    assert sorted(np.bincount(bench.train.labels)) == [2, 2, 2] and bench.query.num_classes == 3


def test_cars_split_reads_the_annotation_struct(tmp_path: Path) -> None:
    bench = load_retrieval_benchmark("cars196", write_cars(tmp_path))
    assert len(bench.train) == 6 and len(bench.query) == 6
    # images 1..6 belong to classes 1-3 (train), 7..12 to 99-101 (test), whatever their "test" flag says
    assert [p.name for p in bench.train.paths] == [f"{i:06d}.jpg" for i in range(1, 7)]
    assert bench.train.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_sop_reads_both_split_files(tmp_path: Path) -> None:
    bench = load_retrieval_benchmark("sop", write_sop(tmp_path, train_classes=5, test_classes=3, per_class=2))
    assert (len(bench.train), len(bench.query)) == (10, 6)
    assert bench.train.num_classes == 5 and bench.query.num_classes == 3


def test_inshop_query_and_gallery_share_item_ids(tmp_path: Path) -> None:
    bench = load_retrieval_benchmark("inshop", write_inshop(tmp_path, items=3, per_split=2))
    assert bench.gallery is not None
    assert (len(bench.train), len(bench.query), len(bench.gallery)) == (6, 6, 6)
    for q_path, q_label in zip(bench.query.paths, bench.query.labels):
        same_item = [g for g, label in zip(bench.gallery.paths, bench.gallery.labels) if label == q_label]
        assert {g.parent for g in same_item} == {q_path.parent}


def test_inaturalist_classes_are_folder_pairs(tmp_path: Path) -> None:
    bench = load_retrieval_benchmark("inaturalist", write_inaturalist(tmp_path))
    assert bench.train.num_classes == 3 and bench.query.num_classes == 3
    assert all(p.parts[-4] == "train_val2018" for p in bench.train.paths)


@pytest.mark.parametrize(
    ("writer", "name", "file", "content", "message"),
    [
        (
            write_sop,
            "sop",
            "Ebay_train.txt",
            "image_id class_id super_class_id path\n1 x 1 a.jpg\n",
            r"Ebay_train.txt:2: class_id 'x'",
        ),
        (
            write_sop,
            "sop",
            "Ebay_test.txt",
            "image_id class_id super_class_id path\n1 2 a.jpg\n",
            r"Ebay_test.txt:2: expected",
        ),
        (
            write_sop,
            "sop",
            "Ebay_train.txt",
            "1 3 1 missing/a.jpg\n",
            r"Ebay_train.txt:1: image 'missing/a.jpg' not found",
        ),
        (write_cub, "cub200", "image_class_labels.txt", "1 1\n2 201\n", r"image_class_labels.txt:2: class id 201"),
        (write_cub, "cub200", "images.txt", "1 a.jpg extra\n", r"images.txt:1: expected '<image id> <path>'"),
        (
            write_cub,
            "cub200",
            "image_class_labels.txt",
            "1 1\n99 2\n",
            r"image_class_labels.txt:2: image id 99 is not in",
        ),
        (
            write_inshop,
            "inshop",
            "list_eval_partition.txt",
            "1\nheader\nimg/a.jpg id_1 validation\n",
            r"list_eval_partition.txt:3: expected",
        ),
        (
            write_inaturalist,
            "inaturalist",
            "Inat_dataset_splits/Inaturalist_test_set1.txt",
            "a.jpg\n",
            r"Inaturalist_test_set1.txt:1: expected",
        ),
    ],
)
def test_malformed_lists_name_the_file_and_line(tmp_path, writer, name, file, content, message) -> None:  # type: ignore[no-untyped-def]
    root = writer(tmp_path)
    (root / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        load_retrieval_benchmark(name, root)


@pytest.mark.parametrize(
    ("writer", "name", "file"),
    [
        (write_sop, "sop", "Ebay_test.txt"),
        (write_cub, "cub200", "images.txt"),
        (write_cars, "cars196", "cars_annos.mat"),
        (write_inshop, "inshop", "list_eval_partition.txt"),
        (write_inaturalist, "inaturalist", "Inat_dataset_splits/Inaturalist_train_set1.txt"),
    ],
)
def test_missing_files_are_named(tmp_path, writer, name, file) -> None:  # type: ignore[no-untyped-def]
    root = writer(tmp_path)
    (root / file).unlink()
    with pytest.raises(ValueError, match=rf"{Path(file).name}: missing"):
        load_retrieval_benchmark(name, root)


def test_cars_errors_name_the_annotation(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = write_cars(tmp_path)
    dtype = [("relative_im_path", "O"), ("class", "O")]
    savemat(
        root / "cars_annos.mat", {"annotations": np.array([[("car_ims/000001.jpg", 1), ("x.jpg", 300)]], dtype=dtype)}
    )
    with pytest.raises(ValueError, match=r"cars_annos.mat: annotation 2: class 300"):
        load_retrieval_benchmark("cars196", root)
    savemat(root / "cars_annos.mat", {"something": np.zeros(3)})
    with pytest.raises(ValueError, match=r"cars_annos.mat: not a Cars196 annotation file"):
        load_retrieval_benchmark("cars196", root)


def test_unknown_benchmark_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown retrieval benchmark"):
        load_retrieval_benchmark("mnist", tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        load_retrieval_benchmark("sop", tmp_path / "nowhere")


def test_cifar10_batches_and_the_dpsh_split(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path, per_class=(2, 2, 2, 2, 2, 2))
    images, labels = load_cifar10(root)
    assert images.shape == (120, 32, 32, 3) and images.dtype == np.uint8
    with (root / "data_batch_1").open("rb") as handle:
        first = pickle.load(handle, encoding="bytes")
    # channel-major rows become HWC images: the first row's red plane is image 0's channel 0
    assert np.array_equal(images[0, :, :, 0].ravel(), first[b"data"][0, :1024])
    split = hashing_split(labels, query_per_class=3, train_per_class=5, seed=0)
    assert len(split.query) == 30 and len(split.train) == 50 and len(split.database) == 90
    assert not set(split.query) & set(split.database) and set(split.train) <= set(split.database)
    assert np.bincount(labels[split.query]).tolist() == [3] * 10
    with pytest.raises(ValueError, match="class 0 has 12 images"):
        hashing_split(labels, query_per_class=10, train_per_class=5)


def test_cifar10_errors_name_the_batch(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path, per_class=(1,) * 6)
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_cifar10(root)
    (root / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3: missing"):
        load_cifar10(root)
    with (root / "data_batch_3").open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match=r"data_batch_3: b'data' must be uint8 \[n, 3072\]"):
        load_cifar10(root)


def test_transforms_give_normalised_crops_of_the_requested_size() -> None:
    image = Image.fromarray(np.full((50, 80, 3), 255, np.uint8))
    train = TrainTransform(size=24, resize=40, scale=(0.16, 1.0), color_jitter=(0.3, 0.3, 0.3, 0.1))
    out = train(image)
    assert out.shape == (3, 24, 24) and torch.isfinite(out).all()
    evaluated = EvalTransform(size=24)(image)
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(evaluated.mean(dim=(1, 2)), expected)
    with pytest.raises(ValueError, match="color_jitter"):
        TrainTransform(size=8, color_jitter=(0.1, 0.2))
