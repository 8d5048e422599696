"""Image towers for the papers' real experiments (ResNet-50, ViT-S/16, ViT-B/16, DINO, DINOv2, CLIP), an embedding
head, and frozen batch-norm.

The towers are Hugging Face ``transformers`` models: they build and run without torchvision (whose wheel on the
package index is a CUDA build that breaks a CPU torch, and which timm and open_clip import), and they load
pretrained weights from a local directory or from the hub with the same call. timm/open_clip towers stay available
through :func:`pairloss.models.backbones.build_backbone` where torchvision works.

Weights (``weights``): ``None`` builds the architecture with random weights (nothing is read or downloaded);
``"hub"`` loads the tower's published checkpoint (``hub_id``, default per tower below) with ``from_pretrained``,
which reads the local Hugging Face cache and downloads only when the machine is online; a directory is read with
``from_pretrained`` (a ``save_pretrained`` folder); a file is a ``state_dict`` of the tower read by
:func:`pairloss.models.backbones.load_weights`. ``arch`` overrides fields of the tower's configuration (e.g.
``{"num_hidden_layers": 2, "hidden_size": 32}``), used to build small towers of the same family.

Features: the pooled output of ResNet-50 (``[N, 2048]``; ``pooling="gem"`` for the generalised-mean pooling of the
RS@k code, Radenović et al. 2018, p = 3 learnt), the class token after the final layer norm for ViT / DINO / DINOv2,
and the projected image embedding for CLIP. ViTs interpolate their position embeddings to the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.models.backbones import load_weights

__all__ = [
    "VISION_TOWERS",
    "EmbeddingModel",
    "GeneralizedMeanPooling",
    "VisionTower",
    "build_embedding_model",
    "build_vision_tower",
    "freeze_batch_norm",
]


@dataclass(frozen=True)
class VisionTower:
    """A tower's ``transformers`` model class and configuration class, default configuration and hub checkpoint."""

    model_class: str
    config_class: str
    config: Mapping[str, Any]
    hub_id: str
    description: str


_VIT_B = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
_VIT_S = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536}

#: The towers by the name used in configs (``model.backbone``).
VISION_TOWERS: dict[str, VisionTower] = {
    "resnet50": VisionTower(
        "ResNetModel",
        "ResNetConfig",
        {"depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck"},
        "microsoft/resnet-50",
        "ResNet-50, ImageNet-1k",
    ),
    "vit_s16": VisionTower(
        "ViTModel", "ViTConfig", {**_VIT_S, "patch_size": 16}, "facebook/dino-vits16", "ViT-S/16 (DINO weights)"
    ),
    "vit_b16": VisionTower(
        "ViTModel",
        "ViTConfig",
        {**_VIT_B, "patch_size": 16},
        "google/vit-base-patch16-224-in21k",
        "ViT-B/16, ImageNet-21k",
    ),
    "dino_vitb16": VisionTower(
        "ViTModel", "ViTConfig", {**_VIT_B, "patch_size": 16}, "facebook/dino-vitb16", "ViT-B/16, DINO"
    ),
    "dinov2_vits14": VisionTower(
        "Dinov2Model", "Dinov2Config", {**_VIT_S, "patch_size": 14}, "facebook/dinov2-small", "ViT-S/14, DINOv2"
    ),
    "dinov2_vitb14": VisionTower(
        "Dinov2Model", "Dinov2Config", {**_VIT_B, "patch_size": 14}, "facebook/dinov2-base", "ViT-B/14, DINOv2"
    ),
    "clip_vitb16": VisionTower(
        "CLIPVisionModelWithProjection",
        "CLIPVisionConfig",
        {**_VIT_B, "patch_size": 16, "projection_dim": 512},
        "openai/clip-vit-base-patch16",
        "CLIP ViT-B/16 image tower",
    ),
}


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling ``(mean_{h,w} x^p)^{1/p}`` over ``[N, C, H, W]`` with a learnt ``p`` (Radenović, Tolias, Chum,
    TPAMI 2018)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


class _TowerFeatures(nn.Module):
    """``pixel_values [N, 3, H, W] -> features [N, F]`` for a ``transformers`` vision model."""

    def __init__(self, model: nn.Module, kind: str, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.gem = GeneralizedMeanPooling() if pooling == "gem" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "ResNetModel":
            out = self.model(pixel_values=x)
            if self.gem is not None:
                return self.gem(out.last_hidden_state)
            pooled: Tensor = out.pooler_output.flatten(1)
            return pooled
        if self.kind == "CLIPVisionModelWithProjection":
            embeds: Tensor = self.model(pixel_values=x, interpolate_pos_encoding=True).image_embeds
            return embeds
        if self.kind == "ViTModel":
            hidden = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        else:  # DINOv2 always interpolates
            hidden = self.model(pixel_values=x).last_hidden_state
        cls_token: Tensor = hidden[:, 0]
        return cls_token


def _feature_size(model: nn.Module, kind: str) -> int:
    config: Any = model.config
    if kind == "ResNetModel":
        return int(config.hidden_sizes[-1])
    if kind == "CLIPVisionModelWithProjection":
        return int(config.projection_dim)
    return int(config.hidden_size)


def build_vision_tower(
    name: str,
    *,
    weights: str | Path | None = None,
    hub_id: str | None = None,
    image_size: int = 224,
    arch: Mapping[str, Any] | None = None,
    pooling: str = "default",
) -> tuple[nn.Module, int]:
    """The tower ``name`` (a key of :data:`VISION_TOWERS`) as a module ``[N, 3, H, W] -> [N, F]``, and ``F``.

    Args:
        name: the tower.
        weights: ``None`` (random), ``"hub"``, a ``save_pretrained`` directory, or a ``state_dict`` file.
        hub_id: the checkpoint for ``"hub"`` (default: the tower's published one).
        image_size: the configuration's image size for a randomly initialised ViT.
        arch: configuration fields to override (random initialisation only; a checkpoint brings its own).
        pooling: ``"default"`` or ``"gem"`` (ResNet only).
    """
    if name not in VISION_TOWERS:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(VISION_TOWERS)}")
    if pooling not in ("default", "gem"):
        raise ValueError(f"pooling must be 'default' or 'gem', got {pooling!r}")
    tower = VISION_TOWERS[name]
    if pooling == "gem" and tower.model_class != "ResNetModel":
        raise ValueError(f"pooling='gem' needs a convolutional tower, not {name!r}")
    import transformers

    model_class = getattr(transformers, tower.model_class)
    if weights == "hub" or (weights is not None and Path(weights).is_dir()):
        source = (hub_id or tower.hub_id) if weights == "hub" else str(weights)
        model = model_class.from_pretrained(source)
    else:
        fields = {**tower.config, **({"image_size": image_size} if tower.model_class != "ResNetModel" else {})}
        config = getattr(transformers, tower.config_class)(**{**fields, **dict(arch or {})})
        extra = {"add_pooling_layer": False} if tower.model_class == "ViTModel" else {}
        model = model_class(config, **extra)
        if weights is not None:
            load_weights(model, weights)
    return _TowerFeatures(model, tower.model_class, pooling), _feature_size(model, tower.model_class)


class EmbeddingModel(nn.Module):
    """``features → [layer norm] → linear → [batch norm] → [dropout] → [tanh] → [L2 normalisation]``.

    The heads of the papers: RS@k's code adds a layer norm before the linear layer and normalises; Boudiaf et al.
    use the 2048 ResNet features themselves (``embedding_dim=None``: no linear layer) with an affine-free batch norm
    (Cars196, SOP) and dropout before their classifier; the hashing losses end in ``tanh`` (``activation="tanh"``).
    ``frozen_batch_norm`` keeps the tower's 2-d batch-norm layers in evaluation mode during training, as the RS@k
    and Boudiaf et al. code do with pretrained ResNets (the head's own batch norm still trains).
    """

    def __init__(
        self,
        features: nn.Module,
        num_features: int,
        embedding_dim: int | None,
        *,
        layer_norm: bool = False,
        dropout: float = 0.0,
        batch_norm: bool = False,
        normalize: bool = True,
        activation: str | None = None,
        frozen_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1 or None, got {embedding_dim}")
        if activation not in (None, "tanh"):
            raise ValueError(f"activation must be None or 'tanh', got {activation!r}")
        self.embedding_dim = num_features if embedding_dim is None else embedding_dim
        self.features = features
        self.layer_norm = nn.LayerNorm(num_features) if layer_norm else nn.Identity()
        self.linear = nn.Identity() if embedding_dim is None else nn.Linear(num_features, embedding_dim)
        self.batch_norm = nn.BatchNorm1d(self.embedding_dim, affine=False) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.normalize = normalize
        self.activation: Callable[[Tensor], Tensor] | None = torch.tanh if activation == "tanh" else None
        self.frozen_batch_norm = frozen_batch_norm
        if frozen_batch_norm:
            freeze_batch_norm(self.features)

    def train(self, mode: bool = True) -> EmbeddingModel:
        """``nn.Module.train``; the tower's 2-d batch-norm layers stay in evaluation mode when frozen."""
        super().train(mode)
        if self.frozen_batch_norm:
            freeze_batch_norm(self.features)
        return self

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.batch_norm(self.linear(self.layer_norm(self.features(x)))))
        if self.activation is not None:
            out = self.activation(out)
        return F.normalize(out, dim=-1) if self.normalize else out


def freeze_batch_norm(model: nn.Module) -> nn.Module:
    """Put every 2-d batch-norm layer of ``model`` in evaluation mode (running statistics, no update); returns
    ``model``. :class:`EmbeddingModel` does it after every ``train()`` when ``frozen_batch_norm`` is set."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model


def build_embedding_model(
    backbone: str,
    embedding_dim: int | None,
    *,
    weights: str | Path | None = None,
    hub_id: str | None = None,
    image_size: int = 224,
    arch: Mapping[str, Any] | None = None,
    pooling: str = "default",
    frozen_batch_norm: bool = True,
    **head: Any,
) -> EmbeddingModel:
    """:func:`build_vision_tower` followed by an :class:`EmbeddingModel` head (``head``: its keyword arguments)."""
    features, num_features = build_vision_tower(
        backbone, weights=weights, hub_id=hub_id, image_size=image_size, arch=arch, pooling=pooling
    )
    return EmbeddingModel(features, num_features, embedding_dim, frozen_batch_norm=frozen_batch_norm, **head)
