"""The image-retrieval benchmarks in their official layouts, with the train/test class split the papers use.

Each loader reads the files the data set ships with and returns a :class:`RetrievalBenchmark`: the training images,
the query images and, for In-Shop, a separate gallery (otherwise the queries are retrieved among themselves).
Class ids are remapped to ``0..C−1`` per split. Every listed image is checked to exist, so a missing file fails at
load time rather than in the middle of an epoch; malformed or missing files raise ``ValueError`` naming the file and
the line (or annotation) at fault.

=================  ==========================================================  ================================
data set           files under ``root``                                        split
=================  ==========================================================  ================================
CUB-200-2011       ``images.txt``, ``image_class_labels.txt``, ``images/``     classes 1–100 train, 101–200 test
Cars196            ``cars_annos.mat``, ``car_ims/``                            classes 1–98 train, 99–196 test
SOP                ``Ebay_train.txt``, ``Ebay_test.txt``                       as listed (11,318 / 11,316 classes)
In-Shop            ``list_eval_partition.txt``, ``img/``                       train / query / gallery as listed
iNaturalist 2018   ``Inat_dataset_splits/Inaturalist_{train,test}_set1.txt``   Smooth-AP's class split
=================  ==========================================================  ================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "RETRIEVAL_BENCHMARKS",
    "ImageList",
    "RetrievalBenchmark",
    "load_cars196",
    "load_cub200",
    "load_inaturalist",
    "load_inshop",
    "load_retrieval_benchmark",
    "load_sop",
]


@dataclass(frozen=True)
class ImageList:
    """Image files and their class ids ``0..C−1`` (int64)."""

    paths: list[Path]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


@dataclass(frozen=True)
class RetrievalBenchmark:
    """``train`` images; ``query`` images retrieved among ``gallery`` (``None``: among the queries themselves)."""

    name: str
    train: ImageList
    query: ImageList
    gallery: ImageList | None = None


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ValueError(f"{path}: missing ({what})")
    return path


def _lines(path: Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, whitespace-separated fields)`` of the non-empty lines of ``path``."""
    with _require(path, what).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields:
                yield number, fields


def _image_list(root: Path, entries: list[tuple[str, object, str]]) -> ImageList:
    """``entries``: ``(relative path, raw class key, where it was listed)``; class keys remapped in sorted order."""
    paths: list[Path] = []
    for relative, _, where in entries:
        path = root / relative
        if not path.is_file():
            raise ValueError(f"{where}: image {relative!r} not found under {root}")
        paths.append(path)
    keys = [key for _, key, _ in entries]
    index = {key: i for i, key in enumerate(sorted(set(keys), key=str))}
    return ImageList(paths, np.asarray([index[k] for k in keys], dtype=np.int64))


def _integer(token: str, where: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{where}: {what} {token!r} is not an integer") from None


def load_cub200(root: str | Path) -> RetrievalBenchmark:
    """CUB-200-2011 (Wah et al. 2011): 11,788 bird images of 200 species; species 1–100 train, 101–200 test."""
    root = Path(root)
    images_file = root / "images.txt"
    labels_file = root / "image_class_labels.txt"
    images: dict[int, tuple[str, str]] = {}
    for number, fields in _lines(images_file, "CUB-200-2011 image list"):
        where = f"{images_file}:{number}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<image id> <path>', got {len(fields)} fields")
        images[_integer(fields[0], where, "image id")] = (fields[1], where)
    entries: dict[str, list[tuple[str, object, str]]] = {"train": [], "test": []}
    for number, fields in _lines(labels_file, "CUB-200-2011 class labels"):
        where = f"{labels_file}:{number}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<image id> <class id>', got {len(fields)} fields")
        image_id = _integer(fields[0], where, "image id")
        label = _integer(fields[1], where, "class id")
        if image_id not in images:
            raise ValueError(f"{where}: image id {image_id} is not in {images_file}")
        if not 1 <= label <= 200:
            raise ValueError(f"{where}: class id {label} is outside 1..200")
        relative, listed = images[image_id]
        entries["train" if label <= 100 else "test"].append(("images/" + relative, label, listed))
    return RetrievalBenchmark("cub200", _image_list(root, entries["train"]), _image_list(root, entries["test"]))


def load_cars196(root: str | Path) -> RetrievalBenchmark:
    """Cars196 (Krause et al. 2013): 16,185 images of 196 car models; models 1–98 train, 99–196 test.

    Reads ``cars_annos.mat`` (fields ``relative_im_path`` and ``class`` of each annotation) with scipy.
    """
    from scipy.io import loadmat

    root = Path(root)
    annotations_file = _require(root / "cars_annos.mat", "Cars196 annotations")
    try:
        annotations = loadmat(annotations_file)["annotations"]
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{annotations_file}: not a Cars196 annotation file ({error})") from None
    names = annotations.dtype.names or ()
    if "relative_im_path" not in names or "class" not in names:
        raise ValueError(f"{annotations_file}: annotations lack the fields 'relative_im_path' and 'class'")
    entries: dict[str, list[tuple[str, object, str]]] = {"train": [], "test": []}
    for number, annotation in enumerate(annotations.ravel(), start=1):
        where = f"{annotations_file}: annotation {number}"
        try:
            relative = str(np.asarray(annotation["relative_im_path"]).ravel()[0])
            label = int(np.asarray(annotation["class"]).ravel()[0])
        except (IndexError, TypeError, ValueError):
            raise ValueError(f"{where}: malformed 'relative_im_path' or 'class'") from None
        if not 1 <= label <= 196:
            raise ValueError(f"{where}: class {label} is outside 1..196")
        entries["train" if label <= 98 else "test"].append((relative, label, where))
    return RetrievalBenchmark("cars196", _image_list(root, entries["train"]), _image_list(root, entries["test"]))


def _sop_split(root: Path, name: str) -> ImageList:
    path = root / name
    entries: list[tuple[str, object, str]] = []
    for number, fields in _lines(path, "Stanford Online Products split"):
        if number == 1 and fields[0] == "image_id":
            continue  # the header
        where = f"{path}:{number}"
        if len(fields) != 4:
            raise ValueError(f"{where}: expected '<image_id> <class_id> <super_class_id> <path>', got {fields}")
        entries.append((fields[3], _integer(fields[1], where, "class_id"), where))
    return _image_list(root, entries)


def load_sop(root: str | Path) -> RetrievalBenchmark:
    """Stanford Online Products (Oh Song et al. 2016): 120,053 images of 22,634 products, split as listed."""
    root = Path(root)
    return RetrievalBenchmark("sop", _sop_split(root, "Ebay_train.txt"), _sop_split(root, "Ebay_test.txt"))


def load_inshop(root: str | Path) -> RetrievalBenchmark:
    """In-Shop Clothes Retrieval (Liu et al. 2016): ``list_eval_partition.txt`` lists train, query and gallery.

    The file starts with the number of images and a header line; each further line is
    ``<image path> <item id> <train|query|gallery>``. Query and gallery share their item ids.
    """
    root = Path(root)
    path = root / "list_eval_partition.txt"
    entries: dict[str, list[tuple[str, object, str]]] = {"train": [], "query": [], "gallery": []}
    for number, fields in _lines(path, "In-Shop partition list"):
        if number <= 2:
            continue  # the image count and the header
        where = f"{path}:{number}"
        if len(fields) != 3 or fields[2] not in entries:
            raise ValueError(f"{where}: expected '<image path> <item id> <train|query|gallery>', got {fields}")
        entries[fields[2]].append((fields[0], fields[1], where))
    if not entries["train"] or not entries["query"] or not entries["gallery"]:
        raise ValueError(f"{path}: needs train, query and gallery images")
    # query and gallery are labelled together, so that the same item has the same id in both
    evaluation = _image_list(root, entries["query"] + entries["gallery"])
    n_query = len(entries["query"])
    query = ImageList(evaluation.paths[:n_query], evaluation.labels[:n_query])
    gallery = ImageList(evaluation.paths[n_query:], evaluation.labels[n_query:])
    return RetrievalBenchmark("inshop", _image_list(root, entries["train"]), query, gallery)


def _inaturalist_split(root: Path, name: str) -> ImageList:
    path = root / "Inat_dataset_splits" / name
    entries: list[tuple[str, object, str]] = []
    for number, fields in _lines(path, "iNaturalist metric-learning split (Smooth-AP)"):
        where = f"{path}:{number}"
        parts = fields[0].split("/")
        if len(fields) != 1 or len(parts) < 3:
            raise ValueError(f"{where}: expected '<folder>/<super-category>/<category>/<image>', got {fields}")
        entries.append((fields[0], "/".join(parts[-3:-1]), where))
    return _image_list(root, entries)


def load_inaturalist(root: str | Path) -> RetrievalBenchmark:
    """iNaturalist 2018 in the metric-learning split of Smooth-AP (Brown et al. 2020), also used by RS@k.

    ``root`` holds the 2018 images (``train_val2018/...``) and Smooth-AP's ``Inat_dataset_splits/`` lists; the
    class of an image is its ``<super-category>/<category>`` folder pair.
    """
    root = Path(root)
    train = _inaturalist_split(root, "Inaturalist_train_set1.txt")
    test = _inaturalist_split(root, "Inaturalist_test_set1.txt")
    return RetrievalBenchmark("inaturalist", train, test)


#: Loader of each benchmark, by the name used in configs (``data.name``).
RETRIEVAL_BENCHMARKS: dict[str, Callable[[str | Path], RetrievalBenchmark]] = {
    "cub200": load_cub200,
    "cars196": load_cars196,
    "sop": load_sop,
    "inshop": load_inshop,
    "inaturalist": load_inaturalist,
}


def load_retrieval_benchmark(name: str, root: str | Path) -> RetrievalBenchmark:
    """Load the benchmark ``name`` (a key of :data:`RETRIEVAL_BENCHMARKS`) from ``root``."""
    if name not in RETRIEVAL_BENCHMARKS:
        raise ValueError(f"unknown retrieval benchmark {name!r}; choose from {sorted(RETRIEVAL_BENCHMARKS)}")
    if not Path(root).is_dir():
        raise ValueError(f"data root {root} is not a directory")
    return RETRIEVAL_BENCHMARKS[name](root)
