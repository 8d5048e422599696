"""Tiny data sets written in each benchmark's official layout, for the loaders and ``pairloss train`` tests.

Images are small random-noise JPEG/PNG files whose mean colour depends on the class, so that a model can learn
something in a few steps; every writer returns the root folder.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def _image(path: Path, label: int, rng: np.random.Generator, size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.array([(label * 67) % 256, (label * 131) % 256, (label * 29) % 256], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def write_sop(root: Path, train_classes: int = 6, test_classes: int = 4, per_class: int = 3, seed: int = 0) -> Path:
    """``Ebay_train.txt`` / ``Ebay_test.txt`` (header + ``image_id class_id super_class_id path``) and the images."""
    rng = np.random.default_rng(seed)
    image_id = 1
    for name, classes, first in (("Ebay_train.txt", train_classes, 1), ("Ebay_test.txt", test_classes, 1000)):
        lines = ["image_id class_id super_class_id path"]
        for c in range(first, first + classes):
            for i in range(per_class):
                relative = f"bicycle_final/{c}_{i}.JPG"
                _image(root / relative, c, rng)
                lines.append(f"{image_id} {c} 1 {relative}")
                image_id += 1
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def write_cub(root: Path, per_class: int = 2, classes: tuple[int, ...] = (1, 2, 3, 101, 102, 103)) -> Path:
    """``images.txt``, ``image_class_labels.txt`` and ``images/NNN.Species/...`` (classes ≤ 100 train)."""
    rng = np.random.default_rng(1)
    images, labels = [], []
    image_id = 1
    for c in classes:
        for i in range(per_class):
            relative = f"{c:03d}.Species_{c}/Bird_{i}.jpg"
            _image(root / "images" / relative, c, rng)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {c}")
            image_id += 1
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def write_cars(root: Path, per_class: int = 2, classes: tuple[int, ...] = (1, 2, 3, 99, 100, 101)) -> Path:
    """``cars_annos.mat`` (a struct array with ``relative_im_path``, bounding box, ``class``, ``test``) and
    ``car_ims/``."""
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    dtype = [(name, "O") for name in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")]
    records = []
    number = 1
    for c in classes:
        for _ in range(per_class):
            relative = f"car_ims/{number:06d}.jpg"
            _image(root / relative, c, rng)
            records.append((relative, 1, 1, 30, 20, c, number % 2))
            number += 1
    annotations = np.array([records], dtype=dtype)
    savemat(root / "cars_annos.mat", {"annotations": annotations})
    return root


def write_inshop(root: Path, items: int = 4, per_split: int = 2) -> Path:
    """``list_eval_partition.txt`` (count, header, ``path item_id split``) and ``img/``: items 0..items−1 for
    training, the next ones split between query and gallery."""
    rng = np.random.default_rng(3)
    lines = []
    for item in range(2 * items):
        for i in range(per_split):
            for split in ("train",) if item < items else ("query", "gallery"):
                relative = f"img/WOMEN/Dresses/id_{item:08d}/{i:02d}_{split}.jpg"
                _image(root / relative, item, rng)
                lines.append(f"{relative} id_{item:08d} {split}")
    text = f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n"
    (root / "list_eval_partition.txt").write_text(text)
    return root


def write_inaturalist(root: Path, per_class: int = 2) -> Path:
    """Smooth-AP's ``Inat_dataset_splits/Inaturalist_{train,test}_set1.txt`` and ``train_val2018/<super>/<id>/``."""
    rng = np.random.default_rng(4)
    splits = {"Inaturalist_train_set1.txt": [("Plantae", 1), ("Plantae", 2), ("Aves", 3)]}
    splits["Inaturalist_test_set1.txt"] = [("Aves", 4), ("Insecta", 5), ("Insecta", 6)]
    (root / "Inat_dataset_splits").mkdir(parents=True, exist_ok=True)
    for name, classes in splits.items():
        lines = []
        for group, category in classes:
            for i in range(per_class):
                relative = f"train_val2018/{group}/{category}/img_{i}.jpg"
                _image(root / relative, category, rng)
                lines.append(relative)
        (root / "Inat_dataset_splits" / name).write_text("\n".join(lines) + "\n")
    return root


def write_cifar10(root: Path, per_class: tuple[int, ...] = (3, 3, 3, 3, 3, 3)) -> Path:
    """The six python batches, ``per_class[i]`` images of every class in batch ``i``."""
    rng = np.random.default_rng(5)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    root.mkdir(parents=True, exist_ok=True)
    for name, n in zip(names, per_class):
        labels = np.repeat(np.arange(10), n)
        base = (labels[:, None] * 25).astype(np.float64)
        data = np.clip(base + rng.normal(0, 20, (len(labels), 3072)), 0, 255).astype(np.uint8)
        with (root / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, handle)
    return root


def write_letor(root: Path, names: tuple[str, str] = ("train.txt", "test.txt"), n_features: int = 136) -> Path:
    """Two svmlight files with qid (relevance 0–4); the first feature carries the relevance plus noise."""
    rng = np.random.default_rng(6)
    root.mkdir(parents=True, exist_ok=True)
    for name, queries in zip(names, (12, 6)):
        lines = []
        for q in range(1, queries + 1):
            for _ in range(int(rng.integers(3, 9))):
                rel = int(rng.integers(0, 5))
                features = rng.normal(0, 1, n_features)
                features[0] = rel + rng.normal(0, 0.3)
                tokens = " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(features))
                lines.append(f"{rel} qid:{q} {tokens}")
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def write_mulan(root: Path, name: str = "tiny", n_features: int = 5, n_labels: int = 3) -> Path:
    """``<name>-train.arff``, ``<name>-test.arff`` (numeric features, then 0/1 label attributes) and ``<name>.xml``."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    header = [f"@relation {name}"]
    header += [f"@attribute f{i} numeric" for i in range(n_features)]
    header += [f"@attribute l{j} {{0,1}}" for j in range(n_labels)]
    for split, n in (("train", 40), ("test", 20)):
        rows = []
        for _ in range(n):
            x = rng.normal(0, 1, n_features)
            labels = (x[:n_labels] + rng.normal(0, 0.3, n_labels) > 0).astype(int)
            labels[rng.integers(n_labels)] = 1
            rows.append(",".join([*(f"{v:.4f}" for v in x), *(str(v) for v in labels)]))
        (root / f"{name}-{split}.arff").write_text("\n".join([*header, "@data", *rows]) + "\n")
    labels_xml = "".join(f'<label name="l{j}"></label>' for j in range(n_labels))
    (root / f"{name}.xml").write_text(
        f'<?xml version="1.0"?><labels xmlns="http://mulan.sourceforge.net/labels">{labels_xml}</labels>'
    )
    return root
