"""``pairloss train``: shipped configs, overrides, one epoch of each config family on fake data in the official
layouts with tiny randomly initialised towers of the same family, evaluation output, resume, torchrun on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fake_benchmarks import (
    write_cars,
    write_cifar10,
    write_cub,
    write_inaturalist,
    write_inshop,
    write_letor,
    write_mulan,
    write_sop,
)
from pairloss.app.cli import app
from pairloss.training.config import list_configs, load_config
from pairloss.training.experiment import run_experiment

TINY_VIT = [
    "model.arch.hidden_size=32",
    "model.arch.num_hidden_layers=1",
    "model.arch.num_attention_heads=2",
    "model.arch.intermediate_size=64",
]
TINY_RESNET = ["model.arch.hidden_sizes=[8,16,32,64]", "model.arch.depths=[1,1,1,1]", "model.arch.embedding_size=8"]
QUICK = ["model.weights=null", "data.image_size=32", "train.epochs=1", "data.workers=0", "eval.batch_size=16"]


def _run(name: str, out: Path, *overrides: str):  # type: ignore[no-untyped-def]
    return run_experiment(load_config(name, [*overrides, f"out={out}"]))


def _history(out: Path) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())


def test_every_shipped_config_resolves_and_names_its_paper() -> None:
    infos = {info.name: info for info in list_configs()}
    expected_families = {"rsk-sop-vitb16", "rsk-sop-resnet50", "rsk-cars196-vitb16", "rsk-inaturalist-vitb16"}
    expected_families |= {"ce-cub200-resnet50", "ce-cars196-resnet50", "ce-sop-resnet50", "ms-cub200-resnet50"}
    expected_families |= {"dpsh-cifar10", "ash-cifar10", "lambdaloss-mslr30k", "neuralndcg-mslr30k", "wu-u3-yeast"}
    assert expected_families <= set(infos)
    for info in infos.values():
        assert info.description and info.paper and info.expected, info.name
        config = load_config(info.name, ["data.root=/data"])
        assert config.out and config.loss.name and config.model.backbone, info.name


def test_rsk_sop_vitb16_is_the_papers_setting() -> None:
    config = load_config("rsk-sop-vitb16")
    assert config.data.name == "sop" and config.model.backbone == "vit_b16" and config.model.weights == "hub"
    assert config.train.batch_size == 4000 and config.train.chunk_size < 4000
    assert config.loss.name == "RecallAtKSurrogateLoss" and config.loss.use_simix


def test_overrides_and_their_errors(tmp_path: Path) -> None:
    config = load_config("rsk-sop-vitb16", ["train.epochs=2", "model.weights=null", "train.precision=bf16"])
    assert config.train.epochs == 2 and config.model.weights is None and config.train.precision == "bf16"
    assert load_config("rsk-sop-vitb16", ["train.precision=32"]).train.precision == "32"
    with pytest.raises(ValueError, match=r"train.epoch"):
        load_config("rsk-sop-vitb16", ["train.epoch=2"])
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        load_config("rsk-sop-vitb16", ["train.epochs"])
    with pytest.raises(ValueError, match=r"train\.precision must be one of"):
        load_config("rsk-sop-vitb16", ["train.precision=8"])
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        load_config("nope")
    own = tmp_path / "mine.yaml"
    own.write_text("data:\n  name: digits\n")
    with pytest.raises(ValueError, match=r"leaves loss\.name, model\.backbone, out unset"):
        load_config(own)
    assert load_config(own, ["loss.name=ContrastiveLoss", "model.backbone=mlp", "out=x"]).data.name == "digits"


def test_cli_lists_the_configs() -> None:
    result = CliRunner().invoke(app, ["train", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "rsk-sop-vitb16" in result.output and "neuralndcg-mslr30k" in result.output


def test_rsk_sop_one_epoch_then_resume(tmp_path: Path) -> None:
    """The issue's command with a tiny ViT of the same family: batch 4000 > chunk 100 takes the multi-stage step."""
    root, out = write_sop(tmp_path / "sop", train_classes=6, test_classes=4, per_class=3), tmp_path / "out"
    args = [f"data.root={root}", *QUICK, *TINY_VIT, "train.chunk_size=8"]
    first = _run("rsk-sop-vitb16", out, *args)
    assert (out / "config.yaml").is_file() and (out / "last.ckpt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    history = _history(out)
    assert [h["epoch"] for h in history] == [1] and {"recall@1", "map@r"} <= set(history[0]["metrics"])
    saved = load_config(out / "config.yaml")
    assert saved.train.epochs == 1 and saved.model.weights is None and saved.data.root == str(root)

    # the evaluation output is the retrieval metrics of the saved model's test embeddings
    from pairloss.data.benchmarks import load_sop
    from pairloss.data.image_datasets import ImageFileDataset
    from pairloss.data.transforms import EvalTransform
    from pairloss.metrics.retrieval import retrieval

    bench = load_sop(root)
    dataset = ImageFileDataset(bench.query.paths, bench.query.labels, EvalTransform(32))
    model = first.model.eval()
    with torch.no_grad():
        embeddings = model(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    expected = retrieval(embeddings, torch.from_numpy(bench.query.labels), k=[1])
    assert history[0]["metrics"]["recall@1"] == pytest.approx(expected["recall@1"])
    assert history[0]["metrics"]["map@r"] == pytest.approx(expected["map@r"], abs=1e-6)

    state = torch.load(out / "last.ckpt", weights_only=True)
    second = _run("rsk-sop-vitb16", out, *[a for a in args if a != "train.epochs=1"], "train.epochs=2")
    assert second.epochs == 2 and [h["epoch"] for h in _history(out)] == [1, 2]
    assert _history(out)[0] == history[0]
    resumed = torch.load(out / "last.ckpt", weights_only=True)
    assert resumed["step"] == 2 * state["step"] and resumed["epoch"] == 2
    assert any(not torch.equal(resumed["model"][k], v) for k, v in state["model"].items())

    with pytest.raises(ValueError, match=r"different config \(model.embedding_dim: 512 -> 64\)"):
        _run("rsk-sop-vitb16", out, *args, "train.epochs=3", "model.embedding_dim=64")


def test_resume_prints_that_it_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["train", "digits", "train.epochs=1", "train.batch_size=40", "model.hidden=[16]", f"out={out}"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*args[:2], "train.epochs=2", *args[3:]])
    assert second.exit_code == 0, second.output
    said = "".join(second.output.split())  # rich wraps long lines anywhere
    assert "".join(f"resuming from {out / 'last.ckpt'}: 1 of 2 epochs done".split()) in said


@pytest.mark.parametrize(
    ("config", "writer", "tower"),
    [
        ("rsk-cars196-resnet50", write_cars, TINY_RESNET),
        ("ce-cub200-resnet50", write_cub, TINY_RESNET),
        ("ce-inshop-resnet50", write_inshop, TINY_RESNET),
        ("ce-sop-resnet50", write_sop, TINY_RESNET),
        ("ms-cub200-resnet50", write_cub, TINY_RESNET),
        ("rsk-inaturalist-vitb16", write_inaturalist, TINY_VIT),
    ],
)
def test_retrieval_config_families_run_one_epoch(tmp_path: Path, config: str, writer, tower: list[str]) -> None:  # type: ignore[no-untyped-def]
    root = writer(tmp_path / "data")
    out = tmp_path / "out"
    result = _run(config, out, f"data.root={root}", *QUICK, *tower, "train.batch_size=20", "train.chunk_size=8")
    metrics = _history(out)[-1]["metrics"]
    assert result.epochs == 1 and 0.0 <= metrics["recall@1"] <= 1.0 and "map@r" in metrics


def test_bf16_autocast_on_cpu_and_fp16_refused(tmp_path: Path) -> None:
    root = write_sop(tmp_path / "sop", train_classes=4, test_classes=3, per_class=2)
    args = [f"data.root={root}", *QUICK, *TINY_VIT, "train.precision=bf16", "train.batch_size=8", "train.chunk_size=4"]
    _run("rsk-sop-vitb16", tmp_path / "bf16", *args)
    assert all(torch.isfinite(torch.tensor(v)) for v in _history(tmp_path / "bf16")[-1]["metrics"].values())
    with pytest.raises(ValueError, match="needs CUDA"):
        _run("rsk-sop-vitb16", tmp_path / "fp16", *args, "train.precision=16")


def test_hashing_on_cifar10(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "cifar")
    overrides = ["data.query_per_class=2", "data.train_per_class=4", "train.batch_size=20", "model.embedding_dim=12"]
    # a DataLoader worker process decodes and augments the images
    _run("dpsh-cifar10", tmp_path / "out", f"data.root={root}", *QUICK, *TINY_RESNET, *overrides, "data.workers=1")
    assert 0.0 < _history(tmp_path / "out")[-1]["metrics"]["map"] <= 1.0
    _run("ash-cifar10", tmp_path / "ash", f"data.root={root}", *QUICK, *TINY_RESNET, *overrides, "eval.map_top_k=5")
    assert set(_history(tmp_path / "ash")[-1]["metrics"]) == {"map@5"}


@pytest.mark.parametrize("config", ["neuralndcg-mslr30k", "lambdaloss-mslr30k"])
def test_ranking_on_mslr_layout(tmp_path: Path, config: str) -> None:
    root = write_letor(tmp_path / "Fold1")
    args = ["train.epochs=1", "train.batch_size=4", "data.slate_length=5", "model.d_model=16", "model.d_ff=32"]
    _run(config, tmp_path / "out", f"data.root={root}", *args)
    metrics = _history(tmp_path / "out")[-1]["metrics"]
    assert set(metrics) == {"ndcg@5", "ndcg@10", "ndcg@30", "ndcg@60"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_ranking_on_yahoo_layout(tmp_path: Path) -> None:
    root = write_letor(tmp_path / "yahoo", names=("set1.train.txt", "set1.test.txt"), n_features=700)
    overrides = ["data.name=yahoo", "data.train_file=null", "data.test_file=null", "eval.k=[1,3]"]
    _run("lambdaloss-mslr30k", tmp_path / "out", f"data.root={root}", "train.epochs=1", "model.d_model=8", *overrides)
    assert set(_history(tmp_path / "out")[-1]["metrics"]) == {"ndcg@1", "ndcg@3"}


def test_ranking_malformed_file_is_named(tmp_path: Path) -> None:
    root = write_letor(tmp_path / "Fold1")
    with (root / "test.txt").open("a") as handle:
        handle.write("3 qid:99 1:0.5 1:0.7\n")
    with pytest.raises(ValueError, match=r"test.txt:\d+: feature indices must be strictly increasing"):
        _run("neuralndcg-mslr30k", tmp_path / "out", f"data.root={root}", "train.epochs=1")


@pytest.mark.parametrize("config", ["wu-u3-yeast", "wu-pairwise-yeast"])
def test_multilabel_on_mulan_layout(tmp_path: Path, config: str) -> None:
    root = write_mulan(tmp_path / "mulan")
    _run(config, tmp_path / "out", f"data.root={root}", "data.set=tiny", "train.epochs=2", "train.batch_size=16")
    metrics = _history(tmp_path / "out")[-1]["metrics"]
    assert 0.0 <= metrics["ranking_loss"] <= 1.0 and 0.0 <= metrics["average_precision"] <= 1.0


def test_malformed_arff_row_is_named(tmp_path: Path) -> None:
    root = write_mulan(tmp_path / "mulan")
    with (root / "tiny-test.arff").open("a") as handle:
        handle.write("1.0,2.0\n")
    with pytest.raises(ValueError, match=r"tiny-test.arff:\d+: a data row has 2 values but there are 8 attributes"):
        _run("wu-u3-yeast", tmp_path / "out", f"data.root={root}", "data.set=tiny")
    (root / "tiny-train.arff").unlink()
    with pytest.raises(ValueError, match=r"tiny-train.arff: missing"):
        _run("wu-u3-yeast", tmp_path / "out", f"data.root={root}", "data.set=tiny")


def test_missing_data_root_and_mulan_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.root is not set"):
        _run("wu-u3-yeast", tmp_path / "out")
    with pytest.raises(ValueError, match=r"yeast.xml: missing"):
        _run("wu-u3-yeast", tmp_path / "out", f"data.root={tmp_path}")


def test_unknown_loss_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ContrastiveLoss has no argument tau"):
        _run("digits", tmp_path / "out", "loss.tau=0.1")
    with pytest.raises(ValueError, match=r"unknown loss\.name 'Nope'"):
        _run("digits", tmp_path / "out", "loss.name=Nope")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_torchrun_two_processes_equal_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2`` on CPU (gloo): the global batch spans both processes, so the trained model
    equals the single-process one (MLP without batch norm, contrastive loss on cross-rank pairs)."""
    args = ["digits", "train.epochs=1", "train.batch_size=48", "model.hidden=[32]"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    command += ["-m", "pairloss", "train", *args, f"out={tmp_path / 'two'}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _run(*args[:1], tmp_path / "one", *args[1:])
    two = torch.load(tmp_path / "two" / "last.ckpt", weights_only=True)
    one = torch.load(tmp_path / "one" / "last.ckpt", weights_only=True)
    assert two["step"] == one["step"] > 0
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert _history(tmp_path / "two")[0]["metrics"]["recall@1"] == pytest.approx(
        _history(tmp_path / "one")[0]["metrics"]["recall@1"], abs=1e-6
    )


@pytest.mark.slow
def test_the_issue_command_with_the_full_vit_b16(tmp_path: Path) -> None:
    """``pairloss train rsk-sop-vitb16 data.root=DIR model.weights=null data.image_size=32 train.epochs=1 out=OUT``
    (86M parameters, a 1 GB checkpoint), then ``train.epochs=2`` resumes."""
    root, out = write_sop(tmp_path / "sop"), tmp_path / "out"
    runner = CliRunner()
    base = ["train", "rsk-sop-vitb16", f"data.root={root}", "model.weights=null", "data.image_size=32"]
    first = runner.invoke(app, [*base, "train.epochs=1", f"out={out}"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*base, "train.epochs=2", f"out={out}"])
    assert second.exit_code == 0 and "resumingfrom" in "".join(second.output.split())
    assert [h["epoch"] for h in _history(out)] == [1, 2]
