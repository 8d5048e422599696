"""Image towers from ``transformers`` (tiny random configurations of each family; nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pairloss.models.vision import VISION_TOWERS, EmbeddingModel, build_embedding_model, build_vision_tower
from pairloss.training.large_batch import large_batch_backward

TINY = {
    "resnet50": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "embedding_size": 8},
    "vit_b16": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "dinov2_vits14": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
    "clip_vitb16": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "projection_dim": 24,
    },
}


@pytest.mark.parametrize(
    ("name", "width"), [("resnet50", 64), ("vit_b16", 32), ("dinov2_vits14", 32), ("clip_vitb16", 24)]
)
def test_each_family_builds_from_a_config_and_embeds(name: str, width: int) -> None:
    tower, features = build_vision_tower(name, image_size=32, arch=TINY[name])
    assert features == width
    assert tower(torch.rand(3, 3, 32, 32)).shape == (3, width)
    assert tower(torch.rand(2, 3, 48, 48)).shape == (2, width)  # ViTs interpolate their position embeddings
    assert "torchvision" not in sys.modules


def test_default_configurations_are_the_papers_architectures() -> None:
    assert VISION_TOWERS["vit_b16"].config["hidden_size"] == 768 and VISION_TOWERS["vit_b16"].config["patch_size"] == 16
    assert VISION_TOWERS["resnet50"].config["depths"] == [3, 4, 6, 3]
    with pytest.raises(ValueError, match="unknown backbone"):
        build_vision_tower("vgg16")
    with pytest.raises(ValueError, match="pooling='gem' needs a convolutional tower"):
        build_vision_tower("vit_b16", pooling="gem")


def test_weights_from_a_pretrained_folder_and_from_a_state_dict(tmp_path: Path) -> None:
    source, _ = build_vision_tower("vit_b16", image_size=32, arch=TINY["vit_b16"])
    source.eval()
    source.model.save_pretrained(tmp_path / "folder")  # type: ignore[operator]
    torch.save(source.model.state_dict(), tmp_path / "tower.pt")
    x = torch.rand(2, 3, 32, 32)
    from_folder, _ = build_vision_tower("vit_b16", weights=tmp_path / "folder")
    from_file, _ = build_vision_tower("vit_b16", weights=tmp_path / "tower.pt", image_size=32, arch=TINY["vit_b16"])
    fresh, _ = build_vision_tower("vit_b16", image_size=32, arch=TINY["vit_b16"])
    with torch.no_grad():
        expected = source(x)
        torch.testing.assert_close(from_folder.eval()(x), expected)
        torch.testing.assert_close(from_file.eval()(x), expected)
        assert not torch.allclose(fresh.eval()(x), expected)
    with pytest.raises(ValueError, match="do not match"):
        build_vision_tower("resnet50", weights=tmp_path / "tower.pt", arch=TINY["resnet50"])


def test_frozen_batch_norm_keeps_running_statistics() -> None:
    model = build_embedding_model("resnet50", 16, arch=TINY["resnet50"], pooling="gem", frozen_batch_norm=True)
    model.train()
    norms = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    model(torch.rand(4, 3, 32, 32))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    free = build_embedding_model("resnet50", 16, arch=TINY["resnet50"], frozen_batch_norm=False).train()
    assert all(m.training for m in free.features.modules() if isinstance(m, nn.BatchNorm2d))


def test_head_variants() -> None:
    features = nn.Flatten()
    x = torch.randn(5, 4, 2)
    normalised = EmbeddingModel(features, 8, 6, layer_norm=True)
    assert torch.allclose(normalised(x).norm(dim=1), torch.ones(5))
    codes = EmbeddingModel(features, 8, 6, normalize=False, activation="tanh")
    assert codes(x).abs().max() < 1
    identity = EmbeddingModel(features, 8, None, normalize=False)
    assert identity.embedding_dim == 8 and torch.equal(identity(x), x.flatten(1))
    with pytest.raises(ValueError, match="embedding_dim"):
        EmbeddingModel(features, 8, 0)


def test_multi_stage_step_scales_the_loss_for_float16_gradient_scaling() -> None:
    model = nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])

    def loss_fn(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (embeddings**2).mean() + embeddings[labels == 0].sum()

    large_batch_backward(model, x, y, loss_fn, chunk_size=3)
    plain = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    model.zero_grad()
    result = large_batch_backward(model, x, y, loss_fn, chunk_size=3, scale_loss=lambda loss: loss * 8.0)
    for p, g in zip(model.parameters(), plain):
        torch.testing.assert_close(p.grad, 8.0 * g)
    assert result.loss == pytest.approx(float(loss_fn(model(x), y).detach()))
