"""The backbone factory: local weight loading (never a download), optional timm/open_clip, the small CNN."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pairloss.models.backbones import EmbeddingHead, SmallCNN, build_backbone, load_weights


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_small_cnn_shapes() -> None:
    model = build_backbone("small_cnn", 12, in_channels=1)
    assert isinstance(model, EmbeddingHead) and isinstance(model.backbone, SmallCNN)
    assert model(torch.rand(5, 1, 16, 16)).shape == (5, 12)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 12)


def test_loads_a_saved_backbone_checkpoint(tmp_path) -> None:
    torch.manual_seed(1)
    source = build_backbone("small_cnn", 8)
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.backbone.state_dict().items()}}, path)
    torch.manual_seed(2)
    fresh = build_backbone("small_cnn", 8)
    loaded = build_backbone("small_cnn", 8, weights=path)
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value)
        if value.ndim > 1:  # conv kernels: random at initialisation
            assert not torch.equal(fresh.backbone.state_dict()[name], value)


def test_loads_a_whole_model_and_gives_same_embeddings(tmp_path) -> None:
    source = build_backbone("small_cnn", 6).eval()
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("small_cnn", 6, weights=path, weights_cover="all").eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(loaded(x), source(x))


def test_bad_weights_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="not found"):
        build_backbone("small_cnn", 4, weights=tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="do not match"):
        load_weights(SmallCNN(), wrong)
    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 3}, junk)
    with pytest.raises(ValueError, match="no state_dict"):
        load_weights(SmallCNN(), junk)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet-9000", 4)
    with pytest.raises(ValueError, match="embedding_size"):
        build_backbone("small_cnn", 0)
    with pytest.raises(ValueError, match="weights_cover"):
        build_backbone("small_cnn", 4, weights_cover="head")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_missing_optional_library_has_a_clear_error() -> None:
    with pytest.raises(ImportError, match="optional package 'timm'"):
        build_backbone("timm:resnet18", 4)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_model_loads_local_random_weights(tmp_path) -> None:
    source = build_backbone("timm:resnet18", 4, in_channels=3)
    path = tmp_path / "resnet18.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_backbone("timm:resnet18", 4, in_channels=3, weights=path).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.backbone(x), source.eval().backbone(x))


def test_glyph_cnn_shapes_checkpoint_and_errors(tmp_path) -> None:
    from pairloss.models.cnn import GlyphCNN

    model = build_backbone("glyph_cnn", 24)
    assert isinstance(model.backbone, GlyphCNN) and model.backbone.num_features == 64 * 2 * 2
    out = model(torch.rand(5, 1, 16, 16))
    assert out.shape == (5, 24)
    path = tmp_path / "backbone.pt"
    torch.save(model.backbone.state_dict(), path)  # a "foundation" checkpoint: the feature extractor only
    loaded = build_backbone("glyph_cnn", 24, weights=path)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value)
    assert GlyphCNN(widths=(8, 8), image_size=8).num_features == 8 * 2 * 2
    with pytest.raises(ValueError, match="divisible"):
        GlyphCNN(image_size=20)
    with pytest.raises(ValueError, match="widths"):
        GlyphCNN(widths=())
    with pytest.raises(ValueError, match=r"\[N, C, 16, 16\]"):
        model(torch.rand(2, 1, 12, 12))
