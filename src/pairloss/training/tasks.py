"""What ``pairloss train`` trains, per kind of data: the model, the loss, the batches of each epoch, the evaluation.

* **retrieval** (CUB-200-2011, Cars196, SOP, In-Shop, iNaturalist; the bundled digits): an image tower with an
  embedding head, any embedding loss; Recall@k, precision@k, R-precision and MAP@R of the test classes (faiss);
* **hashing** (CIFAR-10): the same tower with a ``tanh`` code head; Hamming-ranking mAP of the queries against the
  database;
* **ranking** (MSLR-WEB10K/30K, Yahoo! LTR): a context-aware list scorer; NDCG@k on the test file;
* **multilabel** (Mulan ARFF sets): a linear or MLP scorer of every label; ranking loss, coverage, one-error,
  average precision and the F1 scores on the test file.

Batches: every process draws the same global batch from a sampler seeded with ``train.seed + epoch`` and keeps its
share (``tensor_split`` by rank), so the global batch does not depend on the number of processes. Images are decoded
and augmented by DataLoader workers in pieces of at most ``train.chunk_size`` and assembled into the step's batch.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pairloss.data.samplers import MPerClassBatchSampler
from pairloss.training.distributed import all_gather_with_grad

__all__ = ["Batch", "RunContext", "Task", "build_loss", "build_task", "global_batches"]


@dataclass(frozen=True)
class RunContext:
    """The resolved config, the device, this process's rank, the world size and the autocast dtype."""

    config: Any
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def share(self, batch: Tensor) -> Tensor:
        """This process's part of a global batch of indices."""
        return batch.tensor_split(self.world)[self.rank]


@dataclass
class Batch:
    """One step's local batch: the model's inputs and the loss's targets, on the device."""

    inputs: tuple[Tensor, ...]
    targets: Tensor


@dataclass
class Task:
    """A model, its loss, the local batches of an epoch, and an evaluation (metrics on rank 0, ``None`` elsewhere).

    ``multi_stage``: the batch's single input tensor may go through the multi-stage large-batch step.
    """

    kind: str
    model: nn.Module
    loss: nn.Module
    steps_per_epoch: int
    batches: Callable[[int], Iterator[Batch]]
    evaluate: Callable[[], dict[str, float] | None]
    multi_stage: bool = False


def build_loss(section: Any, **available: Any) -> nn.Module:
    """The loss class named ``section.name`` (as listed by ``pairloss list``) built with the section's other keys.

    Constructor arguments the config leaves out are filled from ``available`` when the constructor takes them
    (``num_classes``, ``embedding_size`` for classifier and proxy losses).
    """
    from omegaconf import OmegaConf

    from pairloss.losses.base import registered_losses

    options: dict[str, Any] = (
        OmegaConf.to_container(section, resolve=True) if not isinstance(section, dict) else dict(section)  # type: ignore[assignment]
    )
    name = options.pop("name")
    losses = registered_losses()
    if name not in losses:
        raise ValueError(f"unknown loss.name {name!r}; choose from {', '.join(losses)}")
    cls = losses[name]
    parameters = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"{name} has no argument {', '.join(unknown)}; it takes {', '.join(list(parameters)[1:])}")
    for key, value in available.items():
        if key in parameters and key not in options:
            options[key] = value
    return cls(**options)


def global_batches(labels: Tensor, batch_size: int, m_per_class: int, seed: int) -> list[Tensor]:
    """The global batches of one epoch: class-balanced (``m_per_class`` per class,
    :class:`~pairloss.data.MPerClassBatchSampler`) or, for
    ``m_per_class = 0``, a seeded permutation cut into full batches (one batch of everything when there are fewer
    samples than ``batch_size``)."""
    if m_per_class > 0:
        return list(MPerClassBatchSampler(labels, m_per_class, batch_size, seed=seed))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if len(order) <= batch_size:
        return [order]
    return list(order.split(batch_size))[: len(order) // batch_size]


def _loader(dataset: Dataset[Any], ctx: RunContext, batch_sampler: Sequence[list[int]]) -> DataLoader[Any]:
    """``data.workers`` worker processes, at most one per CPU available to this process."""
    workers = min(int(ctx.config.data.workers), len(os.sched_getaffinity(0)))
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def _loaded_batches(dataset: Dataset[Any], batches: list[Tensor], ctx: RunContext) -> Iterator[Batch]:
    """Decode each local batch in pieces of at most ``train.chunk_size`` images (spread over the workers)."""
    piece = max(1, min(int(ctx.config.train.chunk_size), 256))
    plan = [[p.tolist() for p in ctx.share(batch).split(piece)] for batch in batches]
    loaded = iter(_loader(dataset, ctx, [p for pieces in plan for p in pieces]))
    for pieces in plan:
        parts = [next(loaded) for _ in pieces]
        images = torch.cat([p[0] for p in parts]).to(ctx.device, non_blocking=True)
        labels = torch.cat([p[1] for p in parts]).to(ctx.device, non_blocking=True)
        yield Batch((images,), labels)


@torch.no_grad()
def _embed(model: nn.Module, dataset: Dataset[Any], ctx: RunContext) -> Tensor:
    """Outputs of ``model`` (evaluation mode, autocast) for every item of ``dataset``, in order, on every rank: each
    rank embeds a contiguous share and the shares are gathered."""
    n = len(dataset)  # type: ignore[arg-type]
    share = np.array_split(np.arange(n), ctx.world)[ctx.rank]
    size = int(ctx.config.eval.batch_size)
    batches = [share[i : i + size].tolist() for i in range(0, len(share), size)]
    was_training = model.training
    model.eval()
    outputs = []
    for images, _ in _loader(dataset, ctx, batches):
        with ctx.autocast():
            outputs.append(model(images.to(ctx.device, non_blocking=True)).float())
    model.train(was_training)
    local = torch.cat(outputs) if outputs else torch.zeros(0, 0, device=ctx.device)
    if ctx.world > 1:
        width = torch.tensor([local.shape[1]], device=ctx.device)
        torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)
        local = local if local.numel() else torch.zeros(0, int(width), device=ctx.device)
        local = all_gather_with_grad(local)[0]
    return local.cpu()


def _image_transforms(data: Any) -> tuple[Any, Any]:
    from pairloss.data.transforms import EvalTransform, TrainTransform

    resize = data.resize if data.resize is None or isinstance(data.resize, int) else tuple(data.resize)
    mean, std = tuple(float(v) for v in data.mean), tuple(float(v) for v in data.std)
    train = TrainTransform(
        size=int(data.image_size),
        resize=resize,
        scale=(float(data.crop_scale[0]), float(data.crop_scale[1])),
        ratio=(float(data.crop_ratio[0]), float(data.crop_ratio[1])),
        color_jitter=tuple(float(v) for v in data.color_jitter) if data.color_jitter is not None else None,
        mean=mean,
        std=std,
    )
    return train, EvalTransform(size=int(data.image_size), resize=resize, mean=mean, std=std)


def _image_model(config: Any, **head: Any) -> Any:
    from omegaconf import OmegaConf

    from pairloss.models.vision import build_embedding_model

    m = config.model
    return build_embedding_model(
        m.backbone,
        None if m.embedding_dim is None else int(m.embedding_dim),
        weights=m.weights,
        hub_id=m.hub_id,
        image_size=int(config.data.image_size),
        arch=OmegaConf.to_container(m.arch),  # type: ignore[arg-type]
        pooling=m.pooling,
        frozen_batch_norm=bool(m.frozen_batch_norm),
        layer_norm=bool(m.layer_norm),
        dropout=float(m.dropout),
        batch_norm=bool(m.batch_norm),
        **{"normalize": bool(m.normalize), **head},
    )


def _image_task(ctx: RunContext, kind: str, train_set: Dataset[Any], train_labels: Tensor, **head: Any) -> Task:
    """The parts every image task shares: the model, the loss, the batches."""
    c = ctx.config
    model = _image_model(c, **head)
    loss = build_loss(c.loss, num_classes=int(train_labels.max()) + 1, embedding_size=model.embedding_dim)
    batch_size, m = int(c.train.batch_size), int(c.data.m_per_class)
    steps = len(global_batches(train_labels, batch_size, m, int(c.train.seed)))

    def batches(epoch: int) -> Iterator[Batch]:
        return _loaded_batches(train_set, global_batches(train_labels, batch_size, m, int(c.train.seed) + epoch), ctx)

    return Task(kind, model, loss, steps, batches, lambda: None, multi_stage=True)


def _retrieval_task(ctx: RunContext) -> Task:
    from pairloss.data.benchmarks import load_retrieval_benchmark
    from pairloss.data.image_datasets import ImageFileDataset
    from pairloss.metrics.retrieval import retrieval

    c = ctx.config
    bench = load_retrieval_benchmark(c.data.name, _root(c))
    train_tf, eval_tf = _image_transforms(c.data)
    train_set = ImageFileDataset(bench.train.paths, bench.train.labels, train_tf)
    task = _image_task(ctx, "retrieval", train_set, torch.from_numpy(bench.train.labels))

    def evaluate() -> dict[str, float] | None:
        query = _embed(task.model, ImageFileDataset(bench.query.paths, bench.query.labels, eval_tf), ctx)
        gallery = None
        if bench.gallery is not None:
            gallery = _embed(task.model, ImageFileDataset(bench.gallery.paths, bench.gallery.labels, eval_tf), ctx)
        if ctx.rank != 0:
            return None
        query_labels = torch.from_numpy(bench.query.labels)
        if gallery is None or bench.gallery is None:
            return retrieval(query, query_labels, k=_ks(c, len(query) - 1))
        return retrieval(query, query_labels, gallery, torch.from_numpy(bench.gallery.labels), k=_ks(c, len(gallery)))

    task.evaluate = evaluate
    return task


def _ks(config: Any, depth: int) -> list[int]:
    """The configured cut-offs that the reference set is deep enough for."""
    ks = [int(k) for k in config.eval.k if int(k) <= depth]
    if not ks:
        raise ValueError(f"eval.k={list(config.eval.k)}: the reference set has only {depth} items")
    return ks


def _hashing_task(ctx: RunContext) -> Task:
    from pairloss.data.cifar import hashing_split, load_cifar10
    from pairloss.data.image_datasets import ImageArrayDataset
    from pairloss.metrics.hashing import hamming_map, hamming_ranking

    c = ctx.config
    images, labels = load_cifar10(_root(c))
    split = hashing_split(labels, int(c.data.query_per_class), int(c.data.train_per_class), seed=int(c.train.seed))
    train_tf, eval_tf = _image_transforms(c.data)
    train_set = ImageArrayDataset(images[split.train], labels[split.train], train_tf)
    task = _image_task(ctx, "hashing", train_set, torch.from_numpy(labels[split.train]), activation="tanh")

    def evaluate() -> dict[str, float] | None:
        query = _embed(task.model, ImageArrayDataset(images[split.query], labels[split.query], eval_tf), ctx)
        database = _embed(task.model, ImageArrayDataset(images[split.database], labels[split.database], eval_tf), ctx)
        if ctx.rank != 0:
            return None
        ranking = hamming_ranking(query, labels[split.query], database, labels[split.database])
        top_k = c.eval.map_top_k
        return {
            "map" if top_k is None else f"map@{int(top_k)}": hamming_map(ranking, None if top_k is None else int(top_k))
        }

    task.evaluate = evaluate
    return task


def _in_memory_task(
    ctx: RunContext,
    kind: str,
    model: nn.Module,
    loss: nn.Module,
    train: tuple[Tensor, Tensor],
    balance: Tensor,
    test_inputs: Tensor,
    score: Callable[[Tensor], dict[str, float]],
) -> Task:
    """A task whose data fit in memory: batches of ``train = (inputs, targets)`` drawn by :func:`global_batches` on
    the class ids ``balance``; evaluation ``score(model(test_inputs))`` on rank 0."""
    c = ctx.config
    batch_size, seed = int(c.train.batch_size), int(c.train.seed)
    m = int(c.data.m_per_class) if balance.ndim == 1 and kind == "retrieval" else 0
    x, y = train[0].to(ctx.device), train[1].to(ctx.device)

    def batches(epoch: int) -> Iterator[Batch]:
        for batch in global_batches(balance, batch_size, m, seed + epoch):
            local = ctx.share(batch).to(ctx.device)
            yield Batch((x[local],), y[local])

    @torch.no_grad()
    def evaluate() -> dict[str, float] | None:
        if ctx.rank != 0:
            return None
        model.eval()
        outputs = model(test_inputs.to(ctx.device)).float().cpu()
        model.train()
        return score(outputs)

    steps = len(global_batches(balance, batch_size, m, seed))
    return Task(kind, model, loss, steps, batches, evaluate, multi_stage=True)


def _digits_task(ctx: RunContext) -> Task:
    """The bundled digits: train on 0–4, retrieve among 5–9 (an MLP; no files needed)."""
    from pairloss.data.digits import open_set_digits
    from pairloss.metrics.retrieval import retrieval
    from pairloss.models.mlp import MLPEmbedder

    c = ctx.config
    split = open_set_digits()
    hidden = tuple(int(h) for h in c.model.hidden) or (128, 128)
    model = MLPEmbedder(split.num_features, int(c.model.embedding_dim), hidden, batch_norm=bool(c.model.batch_norm))
    loss = build_loss(c.loss, num_classes=int(split.train_y.max()) + 1, embedding_size=int(c.model.embedding_dim))

    def score(embeddings: Tensor) -> dict[str, float]:
        return retrieval(embeddings, split.test_y, k=_ks(c, len(embeddings) - 1))

    train = (split.train_x, split.train_y)
    return _in_memory_task(ctx, "retrieval", model, loss, train, split.train_y, split.test_x, score)


#: Default train / test files of the ranking sets (inside ``data.root``: an MSLR fold folder or Yahoo's folder).
_RANKING_FILES = {
    "mslr10k": ("train.txt", "test.txt", 136),
    "mslr30k": ("train.txt", "test.txt", 136),
    "yahoo": ("set1.train.txt", "set1.test.txt", 700),
}


@dataclass(frozen=True)
class _Lists:
    features: Tensor  # [n, d]
    relevance: Tensor  # [n]
    starts: np.ndarray  # [Q + 1] offsets of each query's documents


def _read_lists(path: Path, n_features: int) -> _Lists:
    from pairloss.data.letor import load_letor

    data = load_letor(path, n_features)
    if not len(data.qids):
        raise ValueError(f"{path}: no query")
    starts = np.concatenate([[0], np.cumsum(np.bincount(data.group))])
    return _Lists(torch.from_numpy(data.features), torch.from_numpy(data.relevance), starts)


def _log_standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """``sign(x) log(1 + |x|)``, then z-scores with the training set's mean and standard deviation (library's
    choice, after allRank's log transform of the MSLR features)."""
    logged = [x.sign() * x.abs().log1p() for x in (train, *others)]
    mean, std = logged[0].mean(0), logged[0].std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in logged]


def _pad_lists(lists: _Lists, queries: Sequence[int], limit: int | None, generator: torch.Generator | None) -> Batch:
    """Pad the documents of ``queries`` into ``[L, S, d]`` lists (relevance −1 where padded); lists longer than
    ``limit`` keep a random subset of ``limit`` documents."""
    chosen = []
    for q in queries:
        docs = torch.arange(int(lists.starts[q]), int(lists.starts[q + 1]))
        if limit is not None and len(docs) > limit:
            docs = docs[torch.randperm(len(docs), generator=generator)[:limit]]
        chosen.append(docs)
    width = max(len(d) for d in chosen)
    features = torch.zeros(len(chosen), width, lists.features.shape[1])
    relevance = torch.full((len(chosen), width), -1.0)
    valid = torch.zeros(len(chosen), width, dtype=torch.bool)
    for i, docs in enumerate(chosen):
        features[i, : len(docs)] = lists.features[docs]
        relevance[i, : len(docs)] = lists.relevance[docs]
        valid[i, : len(docs)] = True
    return Batch((features, valid), relevance)


def _ranking_task(ctx: RunContext) -> Task:
    from pairloss.metrics.ranking import ndcg_at_k
    from pairloss.models.ranker import ListTransformerRanker

    c = ctx.config
    default_train, default_test, n_features = _RANKING_FILES[c.data.name]
    root = Path(_root(c))
    train = _read_lists(root / (c.data.train_file or default_train), n_features)
    test = _read_lists(root / (c.data.test_file or default_test), n_features)
    train_x, test_x = _log_standardise(train.features, test.features)
    train, test = _Lists(train_x, train.relevance, train.starts), _Lists(test_x, test.relevance, test.starts)
    m = c.model
    model = ListTransformerRanker(
        n_features, int(m.d_model), int(m.layers), int(m.heads), int(m.d_ff), float(m.dropout)
    )
    loss = build_loss(c.loss)
    n_queries = len(train.starts) - 1
    batch_size, seed, slate = int(c.train.batch_size), int(c.train.seed), int(c.data.slate_length)
    steps = max(1, math.ceil(n_queries / batch_size))

    def batches(epoch: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n_queries, generator=generator)
        for batch in order.split(batch_size):
            local = ctx.share(batch)
            if len(local) == 0:
                continue
            padded = _pad_lists(train, local.tolist(), slate, generator)
            yield Batch(tuple(t.to(ctx.device) for t in padded.inputs), padded.targets.to(ctx.device))

    @torch.no_grad()
    def evaluate() -> dict[str, float] | None:
        if ctx.rank != 0:
            return None
        model.eval()
        scores, relevance, groups = [], [], []
        queries = list(range(len(test.starts) - 1))
        for start in range(0, len(queries), int(c.eval.batch_size)):
            chunk = queries[start : start + int(c.eval.batch_size)]
            padded = _pad_lists(test, chunk, None, None)
            features, valid = (t.to(ctx.device) for t in padded.inputs)
            with ctx.autocast():
                out = model(features, valid).float().cpu()
            keep = padded.inputs[1]
            scores.append(out[keep])
            relevance.append(padded.targets[keep])
            groups.append(torch.tensor(chunk).unsqueeze(1).expand_as(keep)[keep])
        model.train()
        s, r, g = torch.cat(scores).numpy(), torch.cat(relevance).numpy(), torch.cat(groups).numpy()
        return {f"ndcg@{int(k)}": ndcg_at_k(s, r, g, k=int(k)) for k in c.eval.k}

    return Task("ranking", model, loss, steps, batches, evaluate)


def _multilabel_task(ctx: RunContext) -> Task:
    from pairloss.data.multilabel import load_arff, mulan_label_names
    from pairloss.metrics.multilabel import multilabel_report
    from pairloss.models.mlp import MLPEmbedder

    c = ctx.config
    root = Path(_root(c))
    if not c.data.set:
        raise ValueError("data.set must name the Mulan set (files <set>-train.arff, <set>-test.arff, <set>.xml)")
    xml = root / f"{c.data.set}.xml"
    if not xml.is_file():
        raise ValueError(f"{xml}: missing (the Mulan label list)")
    names = mulan_label_names(xml)
    files = [root / f"{c.data.set}-{part}.arff" for part in ("train", "test")]
    for file in files:
        if not file.is_file():
            raise ValueError(f"{file}: missing (a Mulan ARFF file)")
    train, test = (load_arff(file, label_names=names) for file in files)
    if train.features.shape[1] != test.features.shape[1]:
        raise ValueError(f"{c.data.set}: the train and test files have different features")
    x = torch.as_tensor(np.asarray(train.features), dtype=torch.float32)
    x_test = torch.as_tensor(np.asarray(test.features), dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x, x_test = (x - mean) / std, (x_test - mean) / std
    y = torch.as_tensor(train.labels, dtype=torch.float32)
    hidden = tuple(int(h) for h in c.model.hidden) if c.model.backbone == "mlp" else ()
    model = MLPEmbedder(x.shape[1], train.n_labels, hidden, batch_norm=False)

    def score(scores: Tensor) -> dict[str, float]:
        return multilabel_report(scores, test.labels)

    return _in_memory_task(ctx, "multilabel", model, build_loss(c.loss), (x, y), torch.zeros(len(x)), x_test, score)


def _root(config: Any) -> str:
    if config.data.root is None:
        raise ValueError(f"data.root is not set: give data.root=DIR, the folder of {config.data.name}")
    return str(config.data.root)


_TASKS: dict[str, Callable[[RunContext], Task]] = {
    **dict.fromkeys(("cub200", "cars196", "sop", "inshop", "inaturalist"), _retrieval_task),
    "cifar10": _hashing_task,
    **dict.fromkeys(_RANKING_FILES, _ranking_task),
    "mulan": _multilabel_task,
    "digits": _digits_task,
}


def build_task(ctx: RunContext) -> Task:
    """The task of ``ctx.config.data.name``, its model and loss on ``ctx.device``."""
    name = ctx.config.data.name
    if name not in _TASKS:
        raise ValueError(f"unknown data.name {name!r}; choose from {', '.join(sorted(_TASKS))}")
    task = _TASKS[name](ctx)
    task.model.to(ctx.device)
    task.loss.to(ctx.device)
    return task
